#!/usr/bin/python3
"""Export a PyTorch module to a gpfq model file (docs/model-format.md).

As a module:

    from export_torch import export_model, read_model, reference_forward
    export_model(net, "net.h5", input_shape=(1, 28, 28), mean=[0.286],
                 std=[0.353], num_classes=10, source="my_script.py")
    model = read_model("net.h5")     # list of node dicts, plus .attrs/.check

As a command:

    export_torch.py --arch lenet5 --state-dict lenet5.pt --out lenet5.h5
    export_torch.py --arch torchvision.resnet18 --out resnet18.h5
    export_torch.py --module mypkg.nets:TinyNet --input-shape 3,32,32 \\
        --num-classes 10 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26 --out tiny.h5

The module is traced with torch.fx; every graph node must map to one of the
file format's ops (linear, conv2d, batchnorm2d, relu, maxpool2d, avgpool2d,
adaptive_avgpool2d, flatten, add, identity, dropout). Anything else is refused
with an error naming the node. The exported graph is re-run with plain
PyTorch functional ops and compared with the module's own output before the
file is written, so a file that is written reproduces the module.
"""

import argparse
import contextlib
import dis
import importlib
import inspect
import io
import json
import operator
import os
import sys

import h5py
import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

FORMAT_NAME = "gpfq-model"
FORMAT_VERSION = 1

OPS = ("linear", "conv2d", "batchnorm2d", "relu", "maxpool2d", "avgpool2d",
       "adaptive_avgpool2d", "flatten", "add", "identity", "dropout")

SUPPORTED_TEXT = (
    "nn.Linear; nn.Conv2d; nn.BatchNorm2d; nn.ReLU, F.relu, torch.relu, relu_; "
    "nn.MaxPool2d, F.max_pool2d; nn.AvgPool2d, F.avg_pool2d; "
    "nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d; "
    "torch.flatten(x, 1), nn.Flatten(), x.view(x.size(0), -1), x.reshape(N, -1); "
    "tensor + tensor (operator.add, torch.add, +=); nn.Dropout, F.dropout, nn.Identity")

# Defaults of optional node attributes (docs/model-format.md, "Attributes that
# are missing take PyTorch's defaults"). Pool stride defaults to the kernel.
_DEFAULTS = {
    "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1,
    "ceil_mode": 0, "count_include_pad": 1, "eps": 1e-5,
}


class ExportError(ValueError):
    """A module that cannot be expressed in the gpfq model format."""


# ---------------------------------------------------------------------------
# Tracing


_LEAF_TYPES = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
               nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity,
               nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _base_type(mod):
    """The supported torch.nn class `mod` behaves as, or None.

    Subclasses count only if they keep the base class's forward()."""
    for base in _LEAF_TYPES:
        if isinstance(mod, base) and type(mod).forward is base.forward:
            return base
    return None


class _Proxy(torch.fx.Proxy):
    """fx Proxy whose tuple unpacking (`a, b = proxy`) also works on Python
    3.11, where instruction offsets no longer equal 2 * index."""

    def __iter__(self):
        frame = inspect.currentframe().f_back
        for inst in dis.get_instructions(frame.f_code):
            if inst.offset == frame.f_lasti:
                if inst.opname == "UNPACK_SEQUENCE":
                    return (self[i] for i in range(inst.argval))
                break
        return self.tracer.iter(self)


class _Tracer(torch.fx.Tracer):
    """symbolic_trace, keeping subclasses of the supported layers (with
    unchanged forward) as leaves instead of tracing into them."""

    def is_leaf_module(self, m, module_qualified_name):
        if _base_type(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def proxy(self, node):
        return _Proxy(node, self)


def _trace(module):
    tracer = _Tracer()
    try:
        graph = tracer.trace(module)
    except Exception as e:  # noqa: BLE001 - report any tracing failure
        # Name unsupported torch.nn layers, the likely cause.
        bad = []
        for qual, m in module.named_modules():
            if qual and _base_type(m) is None and tracer.is_leaf_module(m, qual):
                cls = type(m)
                cname = ("torch.nn." + cls.__name__ if getattr(nn, cls.__name__, None) is cls
                         else "%s.%s" % (cls.__module__, cls.__qualname__))
                bad.append("unsupported op at node '%s' (%s)" % (qual.replace(".", "_"), cname))
        hint = ("; ".join(bad) + "; supported ops are " + SUPPORTED_TEXT + ". ") if bad else ""
        raise ExportError("%storch.fx.symbolic_trace failed (%s: %s); the module's "
                          "forward must be traceable without data-dependent "
                          "control flow" % (hint, type(e).__name__, e)) from e
    name = module.__class__.__name__
    return torch.fx.GraphModule(tracer.root, graph, name)


# ---------------------------------------------------------------------------
# Node classification


def _target_name(node, gm):
    """Readable name of what a fx node calls, e.g. 'torch.nn.GELU'."""
    if node.op == "call_module":
        cls = type(gm.get_submodule(node.target))
        if getattr(nn, cls.__name__, None) is cls:
            return "torch.nn." + cls.__name__
        return "%s.%s" % (cls.__module__, cls.__qualname__)
    if node.op == "call_method":
        return "Tensor.%s" % node.target
    if node.op == "call_function":
        t = node.target
        for prefix, ns in (("torch.nn.functional.", F), ("torch.", torch),
                           ("operator.", operator)):
            name = getattr(t, "__name__", None)
            if name and getattr(ns, name, None) is t:
                return prefix + name
            for attr in dir(ns):
                if not attr.startswith("_") and getattr(ns, attr, None) is t:
                    return prefix + attr
        try:
            return torch.fx.node._get_qualified_name(t)
        except Exception:  # noqa: BLE001
            return repr(t)
    if node.op == "get_attr":
        return "parameter/buffer '%s'" % node.target
    return node.op


_RELU_FUNCS = (F.relu, torch.relu, torch.relu_, F.relu_)
_ADD_FUNCS = (operator.add, operator.iadd, torch.add)
_FLATTEN_FUNCS = (torch.flatten,)
_RESHAPE_FUNCS = (torch.reshape,)
_MAXPOOL_FUNCS = (F.max_pool2d, torch.max_pool2d)
_AVGPOOL_FUNCS = (F.avg_pool2d,)
_ADAPTIVE_FUNCS = (F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d)
_DROPOUT_FUNCS = (F.dropout, F.dropout2d)
_UNSUPPORTED_FUNC_HINT = {
    F.max_pool2d_with_indices: "max pooling with return_indices=True",
}

# Positional parameter names of the functional forms, used to bind args.
_FUNC_PARAMS = {
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation",
                   "ceil_mode", "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode",
                   "count_include_pad", "divisor_override"),
    "adaptive_avg_pool2d": ("input", "output_size"),
    "relu": ("input", "inplace"),
    "add": ("input", "other", "alpha"),
    "flatten": ("input", "start_dim", "end_dim"),
    "dropout": ("input", "p", "training", "inplace"),
    "reshape": ("input", "shape"),
}


def _bind(kind, node):
    names = _FUNC_PARAMS[kind]
    out = dict(zip(names, node.args))
    out.update(node.kwargs)
    return out


def _classify(node, gm):
    """Return the kind of a fx node: an exported op, 'alias', 'value' (a
    shape computation) or raise for anything unsupported.

    Called before shape propagation: decides only by what the node calls."""
    op, t = node.op, node.target
    if op == "placeholder":
        return "input"
    if op == "output":
        return "output"
    if op == "get_attr":
        return "const"
    if op == "call_module":
        mod = gm.get_submodule(t)
        base = _base_type(mod)
        kind = {nn.Linear: "linear", nn.Conv2d: "conv2d", nn.BatchNorm2d: "batchnorm2d",
                nn.ReLU: "relu", nn.MaxPool2d: "maxpool2d", nn.AvgPool2d: "avgpool2d",
                nn.AdaptiveAvgPool2d: "adaptive_avgpool2d", nn.Flatten: "flatten",
                nn.Identity: "identity", nn.Dropout: "dropout", nn.Dropout1d: "dropout",
                nn.Dropout2d: "dropout", nn.Dropout3d: "dropout"}.get(base)
        if kind is not None:
            return kind
    elif op == "call_function":
        if t in _RELU_FUNCS:
            return "relu"
        if t in _ADD_FUNCS:
            return "add"
        if t in _FLATTEN_FUNCS:
            return "flatten"
        if t in _RESHAPE_FUNCS:
            return "reshape"
        if t in _MAXPOOL_FUNCS:
            return "maxpool2d"
        if t in _AVGPOOL_FUNCS:
            return "avgpool2d"
        if t in _ADAPTIVE_FUNCS:
            return "adaptive_avgpool2d"
        if t in _DROPOUT_FUNCS:
            return "dropout"
        if t is getattr or t is operator.getitem:
            return "value"
    elif op == "call_method":
        if t in ("relu", "relu_"):
            return "relu"
        if t in ("add", "add_"):
            return "add"
        if t in ("view", "reshape"):
            return "reshape"
        if t == "flatten":
            return "flatten"
        if t == "size":
            return "value"
        if t == "contiguous":
            return "alias"
    return None


def _unsupported(node, gm, detail=None):
    what = _UNSUPPORTED_FUNC_HINT.get(node.target) if node.op == "call_function" else None
    msg = "unsupported op at node '%s' (%s)" % (node.name, _target_name(node, gm))
    if detail or what:
        msg += ": " + (detail or what)
    msg += "; supported ops are " + SUPPORTED_TEXT
    return ExportError(msg)


def _refuse(node, gm, detail):
    return ExportError("cannot export node '%s' (%s): %s"
                       % (node.name, _target_name(node, gm), detail))


# ---------------------------------------------------------------------------
# Conversion helpers


def _pair(v, what="value"):
    if isinstance(v, (list, tuple, torch.Size)):
        if len(v) == 1:
            v = (v[0], v[0])
        if len(v) != 2:
            raise ValueError("%s %r is not a pair" % (what, v))
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


def _np32(t):
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def _shape(node):
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return tuple(int(d) for d in meta.shape)
    return None


def _tensor_args(node):
    """fx nodes among the (flattened) args/kwargs of node."""
    out = []

    def visit(a):
        if isinstance(a, torch.fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            for b in a:
                visit(b)
        elif isinstance(a, dict):
            for b in a.values():
                visit(b)
    visit(node.args)
    visit(node.kwargs)
    return out


def _conv_padding(mod, node, gm):
    if mod.padding_mode != "zeros":
        raise _refuse(node, gm, "padding_mode=%r is not supported (only 'zeros')"
                      % mod.padding_mode)
    p = mod.padding
    if isinstance(p, str):
        if p == "valid":
            return [0, 0]
        if p == "same":
            out = []
            for k, d in zip(mod.kernel_size, mod.dilation):
                total = d * (k - 1)
                if total % 2:
                    raise _refuse(node, gm, "padding='same' with kernel %s and dilation %s "
                                  "pads asymmetrically, which the format cannot express"
                                  % (tuple(mod.kernel_size), tuple(mod.dilation)))
                out.append(total // 2)
            return out
        raise _refuse(node, gm, "padding=%r is not supported" % p)
    return _pair(p, "padding")


# ---------------------------------------------------------------------------
# Graph conversion


def _convert(gm, input_shape, batch):
    """Map a shape-propagated GraphModule to a list of format nodes.

    Returns (nodes, torch_shapes) where torch_shapes maps exported node names
    to the PyTorch output shape, used to cross-check the export."""
    graph_nodes = list(gm.graph.nodes)
    placeholders = [n for n in graph_nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ExportError("the module's forward must take exactly one tensor input "
                          "(found %d placeholders)" % len(placeholders))

    tensor = {}     # fx node -> exported name ('input' for the graph input)
    values = {}     # fx node -> shape value ('shape', t) / ('dim', t, i) / ('other',)
    consts = set()  # get_attr nodes
    nodes = []
    torch_shapes = {"input": (batch,) + tuple(input_shape)}
    used_names = {"input"}

    def fresh_name(n):
        base = n.name if n.name != "input" else "input_node"
        name, i = base, 1
        while name in used_names:
            name = "%s_%d" % (base, i)
            i += 1
        used_names.add(name)
        return name

    def tin(n, a):
        """The exported name of tensor argument `a` of node n."""
        if isinstance(a, torch.fx.Node) and a in tensor:
            return tensor[a]
        if isinstance(a, torch.fx.Node) and a in consts:
            raise _refuse(n, gm, "reads parameter/buffer '%s' directly; only "
                          "tensors computed from the input are supported" % a.target)
        raise _refuse(n, gm, "argument %r is not a tensor computed from the input" % (a,))

    def in_shape(n, a):
        s = _shape(a)
        if s is None:
            raise _refuse(n, gm, "no shape known for input '%s'" % a.name)
        return s

    def emit(n, op, inputs, attrs=None, data=None):
        name = fresh_name(n)
        nodes.append({"name": name, "op": op, "inputs": list(inputs),
                      "attrs": dict(attrs or {}), "data": dict(data or {})})
        tensor[n] = name
        s = _shape(n)
        if s is None:
            raise _refuse(n, gm, "does not produce a tensor")
        torch_shapes[name] = s
        return name

    def need4d(n, a):
        s = in_shape(n, a)
        if len(s) != 4:
            raise _refuse(n, gm, "input '%s' has shape %s; this op needs a 4-D "
                          "(N, C, H, W) input" % (a.name, s))
        return s

    for n in graph_nodes:
        kind = _classify(n, gm)
        if kind == "input":
            tensor[n] = "input"
            continue
        if kind == "const":
            consts.add(n)
            continue
        if kind == "output":
            out = n.args[0]
            if not isinstance(out, torch.fx.Node) or out not in tensor:
                raise ExportError("the module must return a single tensor (got %r)" % (out,))
            out_name = tensor[out]
            break
        if kind is None:
            # Computations on shapes or constants only are no concern of the
            # format unless their result is later used as a tensor.
            if not any(a in tensor for a in _tensor_args(n)):
                values[n] = ("other",)
                continue
            raise _unsupported(n, gm)

        if kind == "value":
            src = n.args[0] if n.args else None
            if n.op == "call_method":  # x.size() / x.size(d)
                dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
                if dim is None:
                    values[n] = ("shape", src)
                else:
                    values[n] = ("dim", src, int(dim))
            elif n.target is getattr:
                if src in tensor and n.args[1] == "shape":
                    values[n] = ("shape", src)
                elif src in tensor:
                    raise _unsupported(n, gm, "tensor attribute %r" % (n.args[1],))
                else:
                    values[n] = ("other",)
            else:  # operator.getitem
                if src in tensor:
                    raise _unsupported(n, gm, "tensor indexing/slicing")
                v = values.get(src)
                if v and v[0] == "shape" and isinstance(n.args[1], int):
                    values[n] = ("dim", v[1], n.args[1])
                else:
                    values[n] = ("other",)
            if values[n][0] == "dim":
                s = _shape(values[n][1])
                if s is not None and values[n][2] < 0:
                    values[n] = ("dim", values[n][1], values[n][2] + len(s))
            continue

        if kind == "alias":
            tensor[n] = tin(n, n.args[0])
            continue

        if n.op == "call_module":
            mod = gm.get_submodule(n.target)
            x = n.args[0] if n.args else None
            if len(n.args) != 1 or n.kwargs:
                raise _refuse(n, gm, "called with %d arguments; expected one tensor"
                              % (len(n.args) + len(n.kwargs)))
            xin = tin(n, x)
            if kind == "linear":
                s = in_shape(n, x)
                if len(s) != 2:
                    raise _refuse(n, gm, "input '%s' has shape %s; nn.Linear is only "
                                  "exported on a 2-D (N, features) input, flatten first"
                                  % (x.name, s))
                data = {"weight": _np32(mod.weight)}
                if mod.bias is not None:
                    data["bias"] = _np32(mod.bias)
                emit(n, "linear", [xin], data=data)
            elif kind == "conv2d":
                need4d(n, x)
                attrs = {"stride": _pair(mod.stride), "padding": _conv_padding(mod, n, gm),
                         "dilation": _pair(mod.dilation), "groups": int(mod.groups)}
                data = {"weight": _np32(mod.weight)}
                if mod.bias is not None:
                    data["bias"] = _np32(mod.bias)
                emit(n, "conv2d", [xin], attrs, data)
            elif kind == "batchnorm2d":
                need4d(n, x)
                if not mod.track_running_stats or mod.running_mean is None \
                        or mod.running_var is None:
                    raise _refuse(n, gm, "BatchNorm2d without running statistics "
                                  "(track_running_stats=False) cannot be exported")
                c = mod.num_features
                w = mod.weight if mod.affine else torch.ones(c)
                b = mod.bias if mod.affine else torch.zeros(c)
                data = {"weight": _np32(w), "bias": _np32(b),
                        "running_mean": _np32(mod.running_mean),
                        "running_var": _np32(mod.running_var)}
                emit(n, "batchnorm2d", [xin], {"eps": float(mod.eps)}, data)
            elif kind == "relu":
                emit(n, "relu", [xin])
            elif kind == "maxpool2d":
                need4d(n, x)
                if mod.return_indices:
                    raise _refuse(n, gm, "return_indices=True is not supported")
                k = _pair(mod.kernel_size)
                s = _pair(mod.stride) if mod.stride is not None else list(k)
                emit(n, "maxpool2d", [xin], {
                    "kernel": k, "stride": s, "padding": _pair(mod.padding),
                    "dilation": _pair(mod.dilation), "ceil_mode": int(bool(mod.ceil_mode))})
            elif kind == "avgpool2d":
                need4d(n, x)
                if mod.divisor_override is not None:
                    raise _refuse(n, gm, "divisor_override is not supported")
                k = _pair(mod.kernel_size)
                s = _pair(mod.stride) if mod.stride is not None else list(k)
                emit(n, "avgpool2d", [xin], {
                    "kernel": k, "stride": s, "padding": _pair(mod.padding),
                    "ceil_mode": int(bool(mod.ceil_mode)),
                    "count_include_pad": int(bool(mod.count_include_pad))})
            elif kind == "adaptive_avgpool2d":
                emit(n, "adaptive_avgpool2d", [xin],
                     {"output_size": _adaptive_size(n, gm, mod.output_size, need4d(n, x))})
            elif kind == "flatten":
                _check_flatten(n, gm, in_shape(n, x), mod.start_dim, mod.end_dim)
                emit(n, "flatten", [xin])
            elif kind in ("identity", "dropout"):
                emit(n, kind, [xin])
            continue

        # call_function / call_method
        if n.op == "call_method":
            # Tensor methods: bind self as 'input'.
            args = {"input": n.args[0]} if n.args else {}
            rest = list(n.args[1:])
        else:
            args, rest = {}, None
        if kind == "relu":
            a = _bind("relu", n) if n.op == "call_function" else args
            emit(n, "relu", [tin(n, a["input"])])
        elif kind == "add":
            if n.op == "call_function":
                a = _bind("add", n)
            else:
                a = dict(args)
                a.update(zip(("other", "alpha"), rest))
                a.update(n.kwargs)
            alpha = a.get("alpha", 1)
            if alpha != 1:
                raise _refuse(n, gm, "add with alpha=%r is not supported" % (alpha,))
            x, y = a.get("input"), a.get("other")
            if not (isinstance(x, torch.fx.Node) and x in tensor
                    and isinstance(y, torch.fx.Node) and y in tensor):
                raise _refuse(n, gm, "add needs two tensors computed from the input "
                              "(adding a constant or parameter is not supported)")
            if in_shape(n, x) != in_shape(n, y):
                raise _refuse(n, gm, "add of shapes %s and %s: broadcasting is not "
                              "supported" % (in_shape(n, x), in_shape(n, y)))
            emit(n, "add", [tin(n, x), tin(n, y)])
        elif kind == "flatten":
            if n.op == "call_function":
                a = _bind("flatten", n)
            else:
                a = dict(args)
                a.update(zip(("start_dim", "end_dim"), rest))
                a.update(n.kwargs)
            x = a["input"]
            _check_flatten(n, gm, in_shape(n, x), a.get("start_dim", 0), a.get("end_dim", -1))
            emit(n, "flatten", [tin(n, x)])
        elif kind == "reshape":
            if n.op == "call_function":
                a = _bind("reshape", n)
                x, shape = a["input"], a.get("shape")
            else:
                x = n.args[0]
                shape = rest[0] if len(rest) == 1 else rest
                if not rest:
                    shape = n.kwargs.get("size", n.kwargs.get("shape"))
            _check_reshape(n, gm, in_shape(n, x), shape, values, _shape(n))
            emit(n, "flatten", [tin(n, x)])
        elif kind in ("maxpool2d", "avgpool2d"):
            if n.op != "call_function":
                raise _unsupported(n, gm)
            a = _bind("max_pool2d" if kind == "maxpool2d" else "avg_pool2d", n)
            x = a["input"]
            need4d(n, x)
            k = _pair(a["kernel_size"])
            st = a.get("stride")
            s = _pair(st) if st not in (None, [], ()) else list(k)
            attrs = {"kernel": k, "stride": s, "padding": _pair(a.get("padding", 0))}
            if kind == "maxpool2d":
                if a.get("return_indices", False):
                    raise _refuse(n, gm, "return_indices=True is not supported")
                attrs["dilation"] = _pair(a.get("dilation", 1))
                attrs["ceil_mode"] = int(bool(a.get("ceil_mode", False)))
            else:
                if a.get("divisor_override") is not None:
                    raise _refuse(n, gm, "divisor_override is not supported")
                attrs["ceil_mode"] = int(bool(a.get("ceil_mode", False)))
                attrs["count_include_pad"] = int(bool(a.get("count_include_pad", True)))
            emit(n, kind, [tin(n, x)], attrs)
        elif kind == "adaptive_avgpool2d":
            if n.op != "call_function":
                raise _unsupported(n, gm)
            a = _bind("adaptive_avg_pool2d", n)
            x = a["input"]
            emit(n, "adaptive_avgpool2d", [tin(n, x)],
                 {"output_size": _adaptive_size(n, gm, a["output_size"], need4d(n, x))})
        elif kind == "dropout":
            a = _bind("dropout", n)
            if a.get("training", True):
                raise _refuse(n, gm, "dropout with training=True is not an inference op; "
                              "put the module in eval mode")
            emit(n, "dropout", [tin(n, a["input"])])
        else:  # pragma: no cover - every kind is handled above
            raise _unsupported(n, gm)
    else:
        raise ExportError("the traced graph has no output")

    if out_name == "input":
        raise ExportError("the module returns its input unchanged; nothing to export")
    return nodes, torch_shapes, out_name


def _adaptive_size(n, gm, output_size, in_shape):
    if isinstance(output_size, (list, tuple)):
        osz = list(output_size)
        if len(osz) == 1:
            osz = osz * 2
    else:
        osz = [output_size, output_size]
    if len(osz) != 2:
        raise _refuse(n, gm, "output_size %r is not a pair" % (output_size,))
    out = []
    for i, v in enumerate(osz):
        if v is None:
            v = in_shape[2 + i]
        if isinstance(v, torch.fx.Node) or int(v) <= 0:
            raise _refuse(n, gm, "output_size %r is not a positive constant" % (output_size,))
        out.append(int(v))
    return out


def _check_flatten(n, gm, s, start_dim, end_dim):
    nd = len(s)
    if not isinstance(start_dim, int) or not isinstance(end_dim, int):
        raise _refuse(n, gm, "flatten dims must be constants")
    sd = start_dim + nd if start_dim < 0 else start_dim
    ed = end_dim + nd if end_dim < 0 else end_dim
    if sd != 1 or ed != nd - 1:
        raise _refuse(n, gm, "only flatten from dim 1 to the last dim is supported "
                      "(got start_dim=%d, end_dim=%d on a %d-D tensor)"
                      % (start_dim, end_dim, nd))


def _check_reshape(n, gm, s, shape, values, out_shape):
    """Accept only view/reshape to (batch, -1) or (batch, per_image_size)."""
    per_image = int(np.prod(s[1:], dtype=np.int64))
    if isinstance(shape, torch.fx.Node) or not isinstance(shape, (list, tuple)):
        raise _refuse(n, gm, "reshape to %r: only x.view(x.size(0), -1) style flattening "
                      "is supported" % (shape,))
    shape = list(shape)
    ok = False
    if len(shape) == 2:
        first, second = shape
        first_is_batch = (isinstance(first, torch.fx.Node)
                          and values.get(first, ("other",))[0] == "dim"
                          and values[first][2] == 0)
        second_ok = second == -1 or (isinstance(second, int) and second == per_image)
        if first_is_batch and second_ok:
            ok = True
        elif first == -1 and isinstance(second, int) and second == per_image:
            ok = True
    if not ok or out_shape is None or tuple(out_shape) != (s[0], per_image):
        names = [a.name if isinstance(a, torch.fx.Node) else a for a in shape]
        raise _refuse(n, gm, "reshape of %s to %s: only flattening to (batch, -1) is "
                      "supported, written as x.view(x.size(0), -1), "
                      "x.reshape(x.shape[0], -1) or torch.flatten(x, 1)" % (s, names))


def _prune(nodes, out_name):
    """Drop nodes the output does not depend on."""
    by_name = {d["name"]: d for d in nodes}
    live, stack = set(), [out_name]
    while stack:
        name = stack.pop()
        if name in live or name == "input":
            continue
        live.add(name)
        stack.extend(by_name[name]["inputs"])
    return [d for d in nodes if d["name"] in live]


def _drop_noops(nodes, out_name):
    """Alias identity/dropout nodes away (keeping the output node)."""
    alias, kept = {}, []
    for d in nodes:
        d = dict(d, inputs=[alias.get(i, i) for i in d["inputs"]])
        if d["op"] in ("identity", "dropout") and d["name"] != out_name:
            alias[d["name"]] = d["inputs"][0]
            continue
        kept.append(d)
    return kept


def _elide_flatten_before_linear(nodes, out_name):
    """Remove flatten nodes whose only readers are linear nodes (the format's
    linear flattens its input itself)."""
    readers = {}
    for d in nodes:
        for i in d["inputs"]:
            readers.setdefault(i, []).append(d)
    alias, kept = {}, []
    for d in nodes:
        d = dict(d, inputs=[alias.get(i, i) for i in d["inputs"]])
        r = readers.get(d["name"], [])
        if d["op"] == "flatten" and d["name"] != out_name and r \
                and all(x["op"] == "linear" for x in r):
            alias[d["name"]] = d["inputs"][0]
            continue
        kept.append(d)
    return kept


# ---------------------------------------------------------------------------
# Reference execution of a node list (plain PyTorch functional ops)


def _attr(d, key, default=None):
    a = d.get("attrs", {})
    if key in a:
        v = a[key]
        return v.tolist() if isinstance(v, np.ndarray) else v
    if key == "stride" and d["op"] in ("maxpool2d", "avgpool2d"):
        return _attr(d, "kernel")
    if default is not None:
        return default
    return _DEFAULTS[key]


def reference_forward(nodes, x, return_all=False):
    """Run a node list (as returned by read_model or built by the exporter)
    with torch functional ops on a float tensor x (N, C, H, W).

    Returns the output tensor, or a dict name -> tensor when return_all."""
    env = {"input": torch.as_tensor(x, dtype=torch.float32)}

    def t(d, key):
        v = d["data"].get(key)
        return None if v is None else torch.from_numpy(np.asarray(v, dtype=np.float32))

    y = None
    for d in nodes:
        ins = [env[i] for i in d["inputs"]]
        op = d["op"]
        if op == "linear":
            y = F.linear(ins[0].reshape(ins[0].shape[0], -1), t(d, "weight"), t(d, "bias"))
        elif op == "conv2d":
            y = F.conv2d(ins[0], t(d, "weight"), t(d, "bias"), tuple(_attr(d, "stride")),
                         tuple(_attr(d, "padding")), tuple(_attr(d, "dilation")),
                         int(_attr(d, "groups")))
        elif op == "batchnorm2d":
            y = F.batch_norm(ins[0], t(d, "running_mean"), t(d, "running_var"),
                             t(d, "weight"), t(d, "bias"), False, 0.0, float(_attr(d, "eps")))
        elif op == "relu":
            y = F.relu(ins[0])
        elif op == "maxpool2d":
            y = F.max_pool2d(ins[0], tuple(_attr(d, "kernel")), tuple(_attr(d, "stride")),
                             tuple(_attr(d, "padding")), tuple(_attr(d, "dilation")),
                             bool(_attr(d, "ceil_mode")))
        elif op == "avgpool2d":
            y = F.avg_pool2d(ins[0], tuple(_attr(d, "kernel")), tuple(_attr(d, "stride")),
                             tuple(_attr(d, "padding")), bool(_attr(d, "ceil_mode")),
                             bool(_attr(d, "count_include_pad")))
        elif op == "adaptive_avgpool2d":
            y = F.adaptive_avg_pool2d(ins[0], tuple(_attr(d, "output_size")))
        elif op == "flatten":
            y = ins[0].reshape(ins[0].shape[0], -1)
        elif op == "add":
            y = ins[0] + ins[1]
        elif op in ("identity", "dropout"):
            y = ins[0]
        else:
            raise ValueError("unknown op %r at node '%s'" % (op, d["name"]))
        env[d["name"]] = y
    return env if return_all else y


# ---------------------------------------------------------------------------
# Writing and reading files


def _as_channel_list(v, c, what):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().reshape(-1).tolist()
    elif isinstance(v, np.ndarray):
        v = v.reshape(-1).tolist()
    elif not isinstance(v, (list, tuple)):
        v = [v]
    v = [float(a) for a in v]
    if len(v) == 1 and c > 1:
        v = v * c
    if len(v) != c:
        raise ExportError("%s has %d values but the input has %d channels" % (what, len(v), c))
    if what == "std" and any(not a > 0 for a in v):
        raise ExportError("std must be positive (got %s)" % v)
    return v


def _write_attr(obj, key, v):
    if isinstance(v, str):
        obj.attrs[key] = v
    elif isinstance(v, bool):
        obj.attrs[key] = np.int32(v)
    elif isinstance(v, (int, np.integer)):
        obj.attrs[key] = np.int32(v)
    elif isinstance(v, (float, np.floating)):
        obj.attrs[key] = np.float64(v)
    elif isinstance(v, (list, tuple)):
        if all(isinstance(a, (int, np.integer)) for a in v):
            obj.attrs[key] = np.asarray(v, dtype=np.int32)
        else:
            obj.attrs[key] = np.asarray(v, dtype=np.float64)
    else:
        obj.attrs[key] = v


def _omit_defaults(d):
    attrs = dict(d["attrs"])
    for key in list(attrs):
        if key == "stride" and d["op"] in ("maxpool2d", "avgpool2d"):
            if attrs["stride"] == attrs.get("kernel"):
                del attrs[key]
        elif key in _DEFAULTS and attrs[key] == _DEFAULTS[key]:
            del attrs[key]
    return dict(d, attrs=attrs)


def write_model(path, nodes, root_attrs, check=None):
    """Write a node list and root attributes to `path` (overwriting it)."""
    tmp = path + ".tmp"
    try:
        with h5py.File(tmp, "w") as f:
            for key, v in root_attrs.items():
                if key in ("float_top1", "float_top5"):
                    f.attrs[key] = np.float64(v)
                elif key in ("mean", "std"):
                    f.attrs[key] = np.asarray(v, dtype=np.float32)
                else:
                    _write_attr(f, key, v)
            g = f.create_group("nodes")
            g.attrs["count"] = np.int32(len(nodes))
            for i, d in enumerate(nodes):
                ng = g.create_group("%04d" % i)
                ng.attrs["name"] = d["name"]
                ng.attrs["op"] = d["op"]
                ng.attrs["inputs"] = ",".join(d["inputs"])
                for key, v in d["attrs"].items():
                    _write_attr(ng, key, v)
                for key, arr in d["data"].items():
                    ng.create_dataset(key, data=np.ascontiguousarray(arr))
            if check is not None:
                cg = f.create_group("check")
                cg.create_dataset("input", data=np.ascontiguousarray(check[0], dtype=np.float32))
                cg.create_dataset("output",
                                  data=np.ascontiguousarray(check[1], dtype=np.float32))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _py(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "SO":
            return [_py(a) for a in v.tolist()]
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class ModelFile(list):
    """The nodes of a model file (list of dicts) with the root attributes in
    .attrs and the optional check batch in .check_input / .check_output."""

    attrs = None
    check_input = None
    check_output = None


def _decode_weight(codes, step, offset):
    c = codes.astype(np.float64)
    if offset == 0:
        w = c * step
    else:
        w = np.where(c == 0, 0.0, np.sign(c) * (offset + step * (np.abs(c) - 1)))
    return w.astype(np.float32)


def read_model(path):
    """Load a gpfq model file.

    Returns a ModelFile: a list with one dict per node, in file order:
        {"name": str, "op": str, "inputs": [str, ...],
         "attrs": {key: int | float | list}, "data": {dataset: np.ndarray}}
    Quantized weights (weight_codes) are also decoded into data["weight"].
    The root attributes are in .attrs (recipe/quantization JSON left as
    strings), the check batch (or None) in .check_input and .check_output."""
    model = ModelFile()
    with h5py.File(path, "r") as f:
        model.attrs = {k: _py(v) for k, v in f.attrs.items()}
        g = f["nodes"]
        count = int(g.attrs["count"])
        for i in range(count):
            ng = g["%04d" % i]
            attrs = {k: _py(v) for k, v in ng.attrs.items()
                     if k not in ("name", "op", "inputs")}
            inputs = _py(ng.attrs["inputs"])
            d = {"name": _py(ng.attrs["name"]), "op": _py(ng.attrs["op"]),
                 "inputs": [s.strip() for s in inputs.split(",") if s.strip()],
                 "attrs": attrs,
                 "data": {k: ng[k][()] for k in ng.keys()}}
            if "weight_codes" in d["data"] and "weight" not in d["data"]:
                d["data"]["weight"] = _decode_weight(
                    d["data"]["weight_codes"], float(attrs.get("weight_step", 1.0)),
                    float(attrs.get("weight_offset", 0.0)))
            model.append(d)
        if "check" in f:
            if "input" in f["check"]:
                model.check_input = f["check/input"][()]
            if "output" in f["check"]:
                model.check_output = f["check/output"][()]
    return model


# ---------------------------------------------------------------------------
# Export


def _max_rel_err(a, b):
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return float((a - b).abs().max()) / scale if b.numel() else 0.0


def export_model(module, path, *, input_shape, mean, std, num_classes, source,
                 float_top1=float("nan"), float_top5=float("nan"), recipe=None,
                 dataset=None, check_input=None, keep_noops=True,
                 elide_flatten=False, write_defaults=True, verify=True):
    """Export `module` to the gpfq model file `path`.

    input_shape: (C, H, W) of one image; mean, std: per channel (a single
    value is repeated for every channel); num_classes: logits of the output.
    recipe: dict (written as JSON) or JSON string. check_input: optional float
    tensor (N, C, H, W); the file then gets /check/input and /check/output
    (the module's logits in eval mode).

    keep_noops=False drops identity/dropout nodes; elide_flatten=True removes
    flatten nodes read only by linear nodes; write_defaults=False omits node
    attributes equal to their defaults. verify re-runs the exported graph and
    compares it with the module. Returns a summary dict (nodes, params, bytes).
    Raises ExportError for anything the format cannot express."""
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape) <= 0:
        raise ExportError("input_shape must be three positive ints C,H,W (got %r)"
                          % (input_shape,))
    c = input_shape[0]
    mean = _as_channel_list(mean, c, "mean")
    std = _as_channel_list(std, c, "std")
    num_classes = int(num_classes)

    module.eval()
    gm = _trace(module)
    gm.eval()

    # Pre-scan: refuse unsupported ops before running anything.
    produces_tensor = set()
    for n in gm.graph.nodes:
        kind = _classify(n, gm)
        if kind == "input":
            produces_tensor.add(n)
        elif kind is None:
            if any(a in produces_tensor for a in _tensor_args(n)):
                raise _unsupported(n, gm)
        elif kind not in ("value", "const", "output"):
            produces_tensor.add(n)

    params = list(module.parameters()) + list(module.buffers())
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    device = params[0].device if params else torch.device("cpu")
    gen = torch.Generator().manual_seed(12345)
    batch = 2
    dummy = torch.randn((batch,) + input_shape, generator=gen).to(device=device, dtype=dtype)
    what = "x".join(map(str, (batch,) + input_shape))
    with torch.no_grad():
        try:
            want = module(dummy.clone())
        except Exception as e:  # noqa: BLE001
            raise ExportError("running the module on a %s input failed: %s: %s"
                              % (what, type(e).__name__, e)) from e
        if not isinstance(want, torch.Tensor):
            raise ExportError("the module must return a single tensor (got %s)"
                              % type(want).__name__)
        want = want.float().cpu()
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                ShapeProp(gm).propagate(dummy.clone())
        except Exception as e:  # noqa: BLE001
            raise ExportError("running the traced module on a %s input failed: %s: %s"
                              % (what, type(e).__name__, e)) from e

    nodes, torch_shapes, out_name = _convert(gm, input_shape, batch)
    nodes = _prune(nodes, out_name)
    if not keep_noops:
        nodes = _drop_noops(nodes, out_name)
    if elide_flatten:
        nodes = _elide_flatten_before_linear(nodes, out_name)
    if not nodes or nodes[-1]["name"] != out_name:
        raise ExportError("internal error: the output node is not last")
    out_shape = torch_shapes[out_name]
    if out_shape != (batch, num_classes):
        raise ExportError("the module's output has shape %s for a batch of %d; expected "
                          "(N, num_classes) = (%d, %d)" % (out_shape, batch, batch, num_classes))

    if verify:
        with torch.no_grad():
            got_all = reference_forward(nodes, dummy.float().cpu(), return_all=True)
        for d in nodes:
            s = tuple(got_all[d["name"]].shape)
            if s != torch_shapes[d["name"]]:
                raise ExportError("node '%s' (%s): the format computes shape %s but PyTorch "
                                  "gives %s" % (d["name"], d["op"], s, torch_shapes[d["name"]]))
        err = _max_rel_err(got_all[out_name], want)
        if not err < 1e-4:
            raise ExportError("the exported graph does not reproduce the module's output "
                              "(max relative error %.3g); in-place ops that change a "
                              "tensor read elsewhere are not supported" % err)

    check = None
    if check_input is not None:
        xin = torch.as_tensor(check_input)
        if xin.dim() != 4 or tuple(xin.shape[1:]) != input_shape:
            raise ExportError("check_input has shape %s; expected (N, %d, %d, %d)"
                              % ((tuple(xin.shape),) + input_shape))
        with torch.no_grad():
            yout = module(xin.to(device=device, dtype=dtype).clone()).float().cpu()
            if verify:
                err = _max_rel_err(reference_forward(nodes, xin.float().cpu()), yout)
                if not err < 1e-4:
                    raise ExportError("the exported graph does not reproduce the module's "
                                      "output on check_input (max relative error %.3g)" % err)
        check = (xin.float().cpu().numpy(), yout.numpy())

    if not write_defaults:
        nodes = [_omit_defaults(d) for d in nodes]

    root = {"gpfq_format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "input_shape": list(input_shape), "num_classes": num_classes,
            "mean": mean, "std": std, "source": str(source),
            "float_top1": float(float_top1), "float_top5": float(float_top5)}
    if dataset:
        root["dataset"] = str(dataset)
    if recipe is not None:
        root["recipe"] = recipe if isinstance(recipe, str) else json.dumps(recipe,
                                                                          sort_keys=True)
    write_model(path, nodes, root, check)
    nparams = sum(int(np.prod(a.shape)) for d in nodes for a in d["data"].values())
    return {"path": path, "nodes": len(nodes), "params": nparams,
            "bytes": os.path.getsize(path),
            "ops": [d["op"] for d in nodes]}


# ---------------------------------------------------------------------------
# Command line


def _floats(items, what):
    out = []
    for it in items:
        for s in str(it).replace(",", " ").split():
            try:
                out.append(float(s))
            except ValueError:
                raise SystemExit("export_torch.py: error: bad %s value %r" % (what, s))
    return out


def _shape3(s):
    parts = [p for p in s.replace("x", ",").split(",") if p.strip()]
    try:
        v = [int(p) for p in parts]
    except ValueError:
        v = []
    if len(v) != 3 or min(v) <= 0:
        raise argparse.ArgumentTypeError("expected C,H,W (three positive ints), got %r" % s)
    return v


def _import_models_torch():
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("models_torch")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build(args, kwargs):
    """Return (module, defaults dict, description)."""
    if args.module:
        if ":" not in args.module:
            raise ExportError("--module must be pkg.mod:ClassOrFactory (got %r)" % args.module)
        modname, attr = args.module.split(":", 1)
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            raise ExportError("cannot import %r: %s" % (modname, e)) from e
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ExportError("%r has no attribute %r" % (modname, attr))
        net = obj(**kwargs) if callable(obj) and not isinstance(obj, nn.Module) else obj
        if not isinstance(net, nn.Module):
            raise ExportError("%s did not give an nn.Module" % args.module)
        return net, {}, args.module
    arch = args.arch
    if arch.startswith("torchvision."):
        import torchvision
        name = arch.split(".")[-1]
        fn = getattr(torchvision.models, name, None)
        if fn is None or not callable(fn):
            raise ExportError("unknown torchvision model %r" % name)
        kw = dict(kwargs)
        kw.setdefault("weights", None)
        if args.num_classes is not None:
            kw.setdefault("num_classes", args.num_classes)
        net = fn(**kw)
        return net, {"input_shape": [3, 224, 224], "num_classes": 1000,
                     "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, \
            "torchvision.models.%s" % name
    mt = _import_models_torch()
    if arch not in mt.MODEL_NAMES:
        raise ExportError("unknown --arch %r: expected one of %s or torchvision.NAME"
                          % (arch, ", ".join(mt.MODEL_NAMES)))
    if kwargs:
        raise ExportError("--kwargs is only used with --module and torchvision models")
    net = mt.build(arch)
    return net, {"input_shape": list(mt.INPUT_SHAPE), "num_classes": mt.NUM_CLASSES,
                 "mean": [mt.FASHION_MEAN], "std": [mt.FASHION_STD],
                 "dataset": "fashion-mnist"}, "tools/models_torch.py:%s" % arch


def _load_state_dict(net, path):
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ExportError("cannot load %s: %s" % (path, e)) from e
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ExportError("%s does not hold a state dict" % path)
    sd = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        sd[k] = v
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ExportError("state dict %s does not fit the model: %s" % (path, e)) from e


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="export_torch.py",
        description="Export a PyTorch model to a gpfq model file (docs/model-format.md).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--arch", help="tools/models_torch.py name (mlp, lenet5, resnet20, "
                     "resnet18) or torchvision.NAME, e.g. torchvision.resnet18")
    src.add_argument("--module", help="pkg.mod:ClassOrFactory importable from sys.path "
                     "(the current directory is searched too)")
    p.add_argument("--kwargs", default=None,
                   help="JSON object of keyword arguments for --module / torchvision")
    p.add_argument("--state-dict", help="checkpoint (.pt) to load; random init otherwise")
    p.add_argument("--seed", type=int, default=0, help="seed for random init (default 0)")
    p.add_argument("--input-shape", type=_shape3, help="C,H,W of one image")
    p.add_argument("--num-classes", type=int, help="number of output logits")
    p.add_argument("--mean", nargs="+", help="per-channel mean (comma or space separated)")
    p.add_argument("--std", nargs="+", help="per-channel std (comma or space separated)")
    p.add_argument("--dataset", help="data set the model was trained for")
    p.add_argument("--source", help="source attribute (default: architecture and checkpoint)")
    p.add_argument("--float-top1", type=float, default=float("nan"))
    p.add_argument("--float-top5", type=float, default=float("nan"))
    p.add_argument("--recipe", help="training recipe: JSON string or @FILE.json")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="also store N random check images and the model's logits")
    p.add_argument("--skip-noops", action="store_true",
                   help="drop identity/dropout nodes instead of writing them")
    p.add_argument("--out", required=True, help="output .h5 file")
    args = p.parse_args(argv)

    if args.module and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else {}
        if not isinstance(kwargs, dict):
            raise ValueError("not an object")
    except ValueError as e:
        p.error("--kwargs must be a JSON object (%s)" % e)
    recipe = None
    if args.recipe:
        text = args.recipe
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        try:
            recipe = json.dumps(json.loads(text), sort_keys=True)
        except ValueError as e:
            p.error("--recipe is not valid JSON (%s)" % e)

    try:
        torch.manual_seed(args.seed)
        net, defaults, desc = _build(args, kwargs)
        if args.state_dict:
            _load_state_dict(net, args.state_dict)
        input_shape = args.input_shape or defaults.get("input_shape")
        num_classes = args.num_classes if args.num_classes is not None \
            else defaults.get("num_classes")
        if input_shape is None:
            p.error("--input-shape is required for this model")
        if num_classes is None:
            p.error("--num-classes is required for this model")
        mean = _floats(args.mean, "--mean") if args.mean else defaults.get("mean", [0.0])
        std = _floats(args.std, "--std") if args.std else defaults.get("std", [1.0])
        dataset = args.dataset if args.dataset is not None else defaults.get("dataset")
        source = args.source or "%s, %s" % (
            desc, "weights " + args.state_dict if args.state_dict
            else "random init (seed %d)" % args.seed)
        check = None
        if args.check > 0:
            gen = torch.Generator().manual_seed(args.seed)
            check = torch.randn((args.check,) + tuple(input_shape), generator=gen)
        info = export_model(net, args.out, input_shape=input_shape, mean=mean, std=std,
                            num_classes=num_classes, source=source,
                            float_top1=args.float_top1, float_top5=args.float_top5,
                            recipe=recipe, dataset=dataset, check_input=check,
                            keep_noops=not args.skip_noops)
    except ExportError as e:
        print("export_torch.py: error: %s" % e, file=sys.stderr)
        return 1
    print("%s: %d nodes, %d params, %.1f KiB" % (args.out, info["nodes"], info["params"],
                                                   info["bytes"] / 1024.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
