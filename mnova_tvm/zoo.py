"""Model zoo: ONNX graphs of 11 real CNN architectures, built here with seeded random weights.

No downloads: each builder writes the architecture of its paper (torchvision's definition where
torchvision has it) with onnx.helper. Weights are He-scaled normals and BatchNorm statistics are
random but realistic, so activations stay O(1) and the outputs are a meaningful numerical check.

Parameter count rule (as torchvision's `parameters()`): conv/linear weights and biases and
BatchNorm scale and shift; BatchNorm running statistics and shape constants are not parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import MnovaError

OPSET = 13
_NOT_PARAMS = (".running_mean", ".running_var", ".const")


class _Net:
    """A tiny graph builder that tracks tensor shapes (NCHW, batch 1) as it goes."""

    def __init__(self, input_size: int, seed: int, channels: int = 3):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": (1, channels, input_size, input_size)}
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def _const(self, array) -> str:
        return self._init(self._name("c") + ".const", np.asarray(array))

    def _node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    def conv(self, x: str, out_ch: int, k: int | tuple[int, int], stride: int = 1,
             pad: int | tuple[int, int] | None = None, groups: int = 1, bias: bool = False,
             dilation: int = 1) -> str:
        n, c, h, w = self.shapes[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        if pad is None:
            pad = ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)
        ph, pw = (pad, pad) if isinstance(pad, int) else pad
        oh = (h + 2 * ph - dilation * (kh - 1) - 1) // stride + 1
        ow = (w + 2 * pw - dilation * (kw - 1) - 1) // stride + 1
        if oh < 1 or ow < 1:
            raise MnovaError(f"input too small: feature map would be {oh}x{ow}; use a larger --input-size")
        fan_in = c // groups * kh * kw
        weight = self.rng.standard_normal((out_ch, c // groups, kh, kw), dtype=np.float32)
        weight *= np.float32(np.sqrt(2.0 / fan_in))
        name = self._name("conv")
        inputs = [x, self._init(name + ".weight", weight)]
        if bias:
            inputs.append(self._init(name + ".bias", 0.05 * self.rng.standard_normal(out_ch, dtype=np.float32)))
        return self._node("Conv", inputs, (n, out_ch, oh, ow), kernel_shape=[kh, kw], strides=[stride, stride],
                          pads=[ph, pw, ph, pw], group=groups, dilations=[dilation, dilation])

    def bn(self, x: str, eps: float = 1e-5, gamma: float = 1.0) -> str:
        """BatchNorm; `gamma` < 1 damps a residual branch so sums of branches stay O(1)."""
        c = self.shapes[x][1]
        name = self._name("bn")
        rng = self.rng
        inputs = [
            x,
            self._init(name + ".weight", (gamma * rng.uniform(0.8, 1.2, c)).astype(np.float32)),
            self._init(name + ".bias", (0.1 * rng.standard_normal(c)).astype(np.float32)),
            self._init(name + ".running_mean", (0.1 * rng.standard_normal(c)).astype(np.float32)),
            self._init(name + ".running_var", rng.uniform(0.8, 1.2, c).astype(np.float32)),
        ]
        return self._node("BatchNormalization", inputs, self.shapes[x], epsilon=eps)

    def relu(self, x: str) -> str:
        return self._node("Relu", [x], self.shapes[x])

    def relu6(self, x: str) -> str:
        lo, hi = self._const(np.float32(0.0)), self._const(np.float32(6.0))
        return self._node("Clip", [x, lo, hi], self.shapes[x])

    def sigmoid(self, x: str) -> str:
        return self._node("Sigmoid", [x], self.shapes[x])

    def swish(self, x: str) -> str:
        return self.mul(x, self.sigmoid(x))

    def mul(self, a: str, b: str) -> str:
        return self._node("Mul", [a, b], np.broadcast_shapes(self.shapes[a], self.shapes[b]))

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], np.broadcast_shapes(self.shapes[a], self.shapes[b]))

    def mean(self, xs: list[str]) -> str:
        """Average of same-shaped tensors (RandWire's aggregation with equal positive weights)."""
        total = xs[0]
        for x in xs[1:]:
            total = self.add(total, x)
        if len(xs) == 1:
            return total
        return self._node("Mul", [total, self._const(np.float32(1.0 / len(xs)))], self.shapes[total])

    def conv_bn(self, x, out_ch, k, stride=1, pad=None, groups=1, act="relu", eps=1e-5, gamma=1.0):
        y = self.bn(self.conv(x, out_ch, k, stride, pad, groups), eps, gamma)
        return {"relu": self.relu, "relu6": self.relu6, "swish": self.swish, None: lambda t: t}[act](y)

    def _pool(self, op, x, k, stride, pad=0, ceil=False):
        n, c, h, w = self.shapes[x]
        rnd = (lambda v: -(-v // stride)) if ceil else (lambda v: v // stride)
        oh = rnd(h + 2 * pad - k) + 1
        ow = rnd(w + 2 * pad - k) + 1
        if ceil:  # the last window must start inside the input (or left padding), as in PyTorch
            oh -= int((oh - 1) * stride >= h + pad)
            ow -= int((ow - 1) * stride >= w + pad)
        if oh < 1 or ow < 1:
            raise MnovaError(f"input too small: a pooled feature map would be {oh}x{ow}; use a larger --input-size")
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, ceil_mode=int(ceil))
        if op == "AveragePool":
            attrs["count_include_pad"] = 0
        return self._node(op, [x], (n, c, oh, ow), **attrs)

    def maxpool(self, x, k, stride, pad=0, ceil=False):
        return self._pool("MaxPool", x, k, stride, pad, ceil)

    def avgpool(self, x, k, stride, pad=0, ceil=False):
        return self._pool("AveragePool", x, k, stride, pad, ceil)

    def gap(self, x: str) -> str:
        n, c, _, _ = self.shapes[x]
        return self._node("GlobalAveragePool", [x], (n, c, 1, 1))

    def concat(self, xs: list[str]) -> str:
        n, _, h, w = self.shapes[xs[0]]
        return self._node("Concat", xs, (n, sum(self.shapes[x][1] for x in xs), h, w), axis=1)

    def flatten(self, x: str) -> str:
        shape = self.shapes[x]
        return self._node("Flatten", [x], (shape[0], int(np.prod(shape[1:]))), axis=1)

    def linear(self, x: str, out_features: int) -> str:
        in_features = self.shapes[x][1]
        name = self._name("fc")
        weight = self.rng.standard_normal((out_features, in_features), dtype=np.float32)
        weight *= np.float32(np.sqrt(1.0 / in_features))
        inputs = [x, self._init(name + ".weight", weight),
                  self._init(name + ".bias", 0.05 * self.rng.standard_normal(out_features, dtype=np.float32))]
        return self._node("Gemm", inputs, (self.shapes[x][0], out_features), transB=1)

    def finish(self, out: str, name: str) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.shapes["input"]))],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(self.shapes[out]))],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="mnova_tvm.zoo")
        model.ir_version = 8
        return model


# ---------------------------------------------------------------- architectures


def _alexnet(net: _Net) -> str:
    x = net.relu(net.conv("input", 64, 11, 4, 2, bias=True))
    x = net.maxpool(x, 3, 2)
    x = net.maxpool(net.relu(net.conv(x, 192, 5, 1, 2, bias=True)), 3, 2)
    x = net.relu(net.conv(x, 384, 3, 1, 1, bias=True))
    x = net.relu(net.conv(x, 256, 3, 1, 1, bias=True))
    x = net.maxpool(net.relu(net.conv(x, 256, 3, 1, 1, bias=True)), 3, 2)
    x = net.flatten(x)
    x = net.relu(net.linear(x, 4096))
    x = net.relu(net.linear(x, 4096))
    return net.linear(x, 1000)


def _vgg16(net: _Net) -> str:
    x = "input"
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        x = net.maxpool(x, 2, 2) if v == "M" else net.relu(net.conv(x, v, 3, 1, 1, bias=True))
    x = net.flatten(x)
    x = net.relu(net.linear(x, 4096))
    x = net.relu(net.linear(x, 4096))
    return net.linear(x, 1000)


def _resnet(net: _Net, blocks: tuple[int, ...], bottleneck: bool) -> str:
    x = net.conv_bn("input", 64, 7, 2, 3)
    x = net.maxpool(x, 3, 2, 1)
    in_ch = 64
    for stage, (n_blocks, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n_blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            out_ch = width * 4 if bottleneck else width
            if bottleneck:
                y = net.conv_bn(x, width, 1)
                y = net.conv_bn(y, width, 3, stride)
                y = net.conv_bn(y, out_ch, 1, act=None, gamma=0.2)
            else:
                y = net.conv_bn(x, width, 3, stride)
                y = net.conv_bn(y, width, 3, act=None, gamma=0.2)
            shortcut = net.conv_bn(x, out_ch, 1, stride, 0, act=None) if stride != 1 or in_ch != out_ch else x
            x = net.relu(net.add(y, shortcut))
            in_ch = out_ch
    return net.linear(net.flatten(net.gap(x)), 1000)


def _mobilenet_v2(net: _Net) -> str:
    x = net.conv_bn("input", 32, 3, 2, act="relu6")
    in_ch = 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = in_ch * t
            y = x if t == 1 else net.conv_bn(x, hidden, 1, act="relu6")
            y = net.conv_bn(y, hidden, 3, stride, groups=hidden, act="relu6")
            residual = stride == 1 and in_ch == c
            y = net.conv_bn(y, c, 1, act=None, gamma=0.2 if residual else 1.0)
            x = net.add(x, y) if residual else y
            in_ch = c
    x = net.conv_bn(x, 1280, 1, act="relu6")
    return net.linear(net.flatten(net.gap(x)), 1000)


def _squeezenet1_1(net: _Net) -> str:
    def fire(x, squeeze, expand):
        s = net.relu(net.conv(x, squeeze, 1, bias=True))
        return net.concat([net.relu(net.conv(s, expand, 1, bias=True)), net.relu(net.conv(s, expand, 3, 1, 1, bias=True))])

    x = net.relu(net.conv("input", 64, 3, 2, 0, bias=True))
    x = net.maxpool(x, 3, 2, ceil=True)
    x = fire(fire(x, 16, 64), 16, 64)
    x = net.maxpool(x, 3, 2, ceil=True)
    x = fire(fire(x, 32, 128), 32, 128)
    x = net.maxpool(x, 3, 2, ceil=True)
    for squeeze, expand in ((48, 192), (48, 192), (64, 256), (64, 256)):
        x = fire(x, squeeze, expand)
    x = net.relu(net.conv(x, 1000, 1, bias=True))
    return net.flatten(net.gap(x))


def _googlenet(net: _Net) -> str:
    def basic(x, c, k, stride=1, pad=None):
        return net.conv_bn(x, c, k, stride, pad, eps=1e-3)

    def inception(x, c1, c3r, c3, c5r, c5, pool_proj):
        b1 = basic(x, c1, 1)
        b2 = basic(basic(x, c3r, 1), c3, 3)
        b3 = basic(basic(x, c5r, 1), c5, 3)  # torchvision uses 3x3 here (its documented deviation)
        b4 = basic(net.maxpool(x, 3, 1, 1, ceil=True), pool_proj, 1)
        return net.concat([b1, b2, b3, b4])

    x = basic("input", 64, 7, 2, 3)
    x = net.maxpool(x, 3, 2, ceil=True)
    x = basic(basic(x, 64, 1), 192, 3)
    x = net.maxpool(x, 3, 2, ceil=True)
    x = inception(x, 64, 96, 128, 16, 32, 32)
    x = inception(x, 128, 128, 192, 32, 96, 64)
    x = net.maxpool(x, 3, 2, ceil=True)
    for cfg in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
                (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)):
        x = inception(x, *cfg)
    x = net.maxpool(x, 2, 2, ceil=True)
    x = inception(x, 256, 160, 320, 32, 128, 128)
    x = inception(x, 384, 192, 384, 48, 128, 128)
    return net.linear(net.flatten(net.gap(x)), 1000)


def _inception_v3(net: _Net) -> str:
    def basic(x, c, k, stride=1, pad=0):
        return net.conv_bn(x, c, k, stride, pad, eps=1e-3)

    def block_a(x, pool_features):
        b1 = basic(x, 64, 1)
        b5 = basic(basic(x, 48, 1), 64, 5, pad=2)
        b3 = basic(basic(basic(x, 64, 1), 96, 3, pad=1), 96, 3, pad=1)
        bp = basic(net.avgpool(x, 3, 1, 1), pool_features, 1)
        return net.concat([b1, b5, b3, bp])

    def block_b(x):
        b3 = basic(x, 384, 3, 2)
        bd = basic(basic(basic(x, 64, 1), 96, 3, pad=1), 96, 3, 2)
        return net.concat([b3, bd, net.maxpool(x, 3, 2)])

    def block_c(x, c7):
        b1 = basic(x, 192, 1)
        b7 = basic(basic(basic(x, c7, 1), c7, (1, 7), pad=(0, 3)), 192, (7, 1), pad=(3, 0))
        bd = basic(x, c7, 1)
        for out, k, p in ((c7, (7, 1), (3, 0)), (c7, (1, 7), (0, 3)), (c7, (7, 1), (3, 0)), (192, (1, 7), (0, 3))):
            bd = basic(bd, out, k, pad=p)
        bp = basic(net.avgpool(x, 3, 1, 1), 192, 1)
        return net.concat([b1, b7, bd, bp])

    def block_d(x):
        b3 = basic(basic(x, 192, 1), 320, 3, 2)
        b7 = basic(x, 192, 1)
        b7 = basic(basic(b7, 192, (1, 7), pad=(0, 3)), 192, (7, 1), pad=(3, 0))
        b7 = basic(b7, 192, 3, 2)
        return net.concat([b3, b7, net.maxpool(x, 3, 2)])

    def block_e(x):
        b1 = basic(x, 320, 1)
        b3 = basic(x, 384, 1)
        b3 = net.concat([basic(b3, 384, (1, 3), pad=(0, 1)), basic(b3, 384, (3, 1), pad=(1, 0))])
        bd = basic(basic(x, 448, 1), 384, 3, pad=1)
        bd = net.concat([basic(bd, 384, (1, 3), pad=(0, 1)), basic(bd, 384, (3, 1), pad=(1, 0))])
        bp = basic(net.avgpool(x, 3, 1, 1), 192, 1)
        return net.concat([b1, b3, bd, bp])

    x = basic("input", 32, 3, 2)
    x = basic(x, 32, 3)
    x = basic(x, 64, 3, pad=1)
    x = net.maxpool(x, 3, 2)
    x = basic(x, 80, 1)
    x = basic(x, 192, 3)
    x = net.maxpool(x, 3, 2)
    x = block_a(block_a(block_a(x, 32), 64), 64)
    x = block_b(x)
    for c7 in (128, 160, 160, 192):
        x = block_c(x, c7)
    x = block_e(block_e(block_d(x)))
    return net.linear(net.flatten(net.gap(x)), 1000)


def _densenet121(net: _Net) -> str:
    growth, bn_size = 32, 4
    x = net.conv_bn("input", 64, 7, 2, 3)
    x = net.maxpool(x, 3, 2, 1)
    for i, n_layers in enumerate((6, 12, 24, 16)):
        features = [x]
        for _ in range(n_layers):
            y = features[0] if len(features) == 1 else net.concat(features)
            y = net.conv(net.relu(net.bn(y)), bn_size * growth, 1)
            y = net.conv(net.relu(net.bn(y)), growth, 3)
            features.append(y)
        x = net.concat(features)
        if i < 3:
            x = net.conv(net.relu(net.bn(x)), net.shapes[x][1] // 2, 1)
            x = net.avgpool(x, 2, 2)
    x = net.relu(net.bn(x))
    return net.linear(net.flatten(net.gap(x)), 1000)


def _efficientnet_b0(net: _Net) -> str:
    x = net.conv_bn("input", 32, 3, 2, act="swish", eps=1e-3)
    in_ch = 32
    for expand, k, s, c, n in ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                               (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = in_ch * expand
            y = x if expand == 1 else net.conv_bn(x, hidden, 1, act="swish", eps=1e-3)
            y = net.conv_bn(y, hidden, k, stride, groups=hidden, act="swish", eps=1e-3)
            squeeze = max(1, in_ch // 4)
            se = net.swish(net.conv(net.gap(y), squeeze, 1, bias=True))
            se = net.sigmoid(net.conv(se, hidden, 1, bias=True))
            residual = stride == 1 and in_ch == c
            y = net.conv_bn(net.mul(y, se), c, 1, act=None, eps=1e-3, gamma=0.2 if residual else 1.0)
            x = net.add(x, y) if residual else y
            in_ch = c
    x = net.conv_bn(x, 1280, 1, act="swish", eps=1e-3)
    return net.linear(net.flatten(net.gap(x)), 1000)


def _watts_strogatz_dag(n: int, k: int, p: float, rng: np.random.Generator) -> list[list[int]]:
    """Predecessor lists of a WS(n, k, p) graph made acyclic by node index (RandWire's rule)."""
    edges = set()
    for i in range(n):
        for j in range(1, k // 2 + 1):
            edges.add((i, (i + j) % n))
    rewired = set()
    for (u, v) in sorted(edges):
        if rng.random() < p:
            choices = [w for w in range(n) if w != u and (u, w) not in rewired and (w, u) not in rewired]
            v = int(rng.choice(choices))
        rewired.add((u, v))
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in rewired:
        a, b = min(u, v), max(u, v)
        if a not in preds[b]:
            preds[b].append(a)
    return [sorted(p) for p in preds]


def _randwire_ws(net: _Net) -> str:
    """RandWire-WS(4, 0.75), small regime (Xie et al., ICCV 2019, Table 1), C = 78, N = 32."""
    channels, n_nodes = 78, 32

    def node_op(x, out_ch, stride):  # ReLU - separable conv 3x3 - BN
        y = net.relu(x)
        y = net.conv(y, net.shapes[y][1], 3, stride, groups=net.shapes[y][1])
        return net.bn(net.conv(y, out_ch, 1))

    def stage(x, n, out_ch):
        preds = _watts_strogatz_dag(n, 4, 0.75, net.rng)
        outs: list[str] = []
        for i in range(n):
            if not preds[i]:
                outs.append(node_op(x, out_ch, 2))
                continue
            outs.append(node_op(net.mean([outs[j] for j in preds[i]]), out_ch, 1))
        succs = {j for p in preds for j in p}
        return net.mean([outs[i] for i in range(n) if i not in succs])

    x = net.conv_bn("input", channels // 2, 3, 2, act=None)
    x = net.conv_bn(net.relu(x), channels, 3, 2, act=None)
    x = stage(x, n_nodes // 2, channels)
    x = stage(x, n_nodes, 2 * channels)
    x = stage(x, n_nodes, 4 * channels)
    x = net.conv_bn(net.relu(x), 1280, 1)
    return net.linear(net.flatten(net.gap(x)), 1000)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    standard_input_size: int
    min_input_size: int
    test_input_size: int
    published_params: int
    source: str
    builder: Callable[[_Net], str]


# --------------------------------------------------------------- shape sweep
# Not a zoo model: random CNN blocks whose operator shapes the zoo's eleven lack, for profiling (a
# cost model learns a shape it has seen from its neighbours). Per resolution, the channel widths
# CNNs use there (low, high): few wide maps at high resolution, as in every architecture above.
_SWEEP_STAGES = ((112, 16, 128), (56, 24, 320), (28, 32, 640), (14, 64, 1152), (7, 96, 1536))


def _sweep_width(rng: np.random.Generator, low: int, high: int) -> int:
    width = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return max(1, int(round(width / 8)) * 8) if rng.random() < 0.75 else int(width)


def _sweep_block(net: _Net, x: str, low: int, high: int) -> str:
    rng = net.rng
    c = net.shapes[x][1]
    act = rng.choice(["relu", "relu6", "swish", None], p=[0.5, 0.2, 0.2, 0.1])
    kind = rng.choice(["conv", "depthwise", "residual", "pool", "concat", "squeeze"], p=[0.4, 0.15, 0.15, 0.1, 0.1, 0.1])
    if kind == "depthwise":
        return net.conv_bn(x, c, int(rng.choice([3, 5, 7], p=[0.6, 0.3, 0.1])), groups=c, act=act)
    if kind == "residual":
        return net.add(x, net.conv_bn(x, c, int(rng.choice([1, 3])), act=None, gamma=0.5))
    if kind == "pool":
        k = int(rng.choice([3, 5]))
        return (net.maxpool if rng.random() < 0.6 else net.avgpool)(x, k, 1, k // 2)
    if kind == "concat":
        return net.concat([x, net.conv_bn(x, _sweep_width(rng, low, high // 2), int(rng.choice([1, 3])), act=act)])
    if kind == "squeeze":
        squeezed = net.conv(net.relu(net.conv(net.gap(x), max(8, c // 4), 1, bias=True)), c, 1, bias=True)
        return net.mul(x, net.sigmoid(squeezed))
    return net.conv_bn(x, _sweep_width(rng, low, high), int(rng.choice([1, 3, 5, 7], p=[0.45, 0.4, 0.1, 0.05])), act=act)


def _downsample(net: _Net, x: str, low: int, high: int) -> str:
    """Halve the map by a strided conv or pool, with or without padding (odd sizes: 55, 27, 13 ...)."""
    rng = net.rng
    k, pad = int(rng.choice([1, 3, 5])), int(rng.integers(0, 2))
    if rng.random() < 0.3:
        return net.maxpool(x, 3 if k == 1 else k, 2, pad * ((3 if k == 1 else k) // 2), ceil=bool(rng.integers(0, 2)))
    c = net.shapes[x][1]
    if k > 1 and c > 3 and rng.random() < 0.3:
        return net.conv_bn(x, c, k, 2, pad=pad * (k // 2), groups=c)
    return net.conv_bn(x, _sweep_width(rng, low, high), k, 2, pad=pad * (k // 2) if k > 1 else 0)


def shape_sweep(blocks: int = 40, seed: int = 0) -> onnx.ModelProto:
    """`blocks` random CNN blocks (convolutions regular and depthwise, residual adds, pools,
    concatenations, squeeze-excite, four activations) spread over five resolutions of a 224x224
    input, ending in a classifier of random width: operator shapes for profiling, not a model."""
    if blocks < len(_SWEEP_STAGES):
        raise MnovaError(f"a shape sweep needs at least {len(_SWEEP_STAGES)} blocks (one per resolution), got {blocks}")
    net = _Net(224, seed)
    x = "input"
    for stage, (_size, low, high) in enumerate(_SWEEP_STAGES):
        x = _downsample(net, x, low, high)
        for _ in range(blocks // len(_SWEEP_STAGES) + (stage < blocks % len(_SWEEP_STAGES))):
            x = _sweep_block(net, x, low, high)
    x = net.linear(net.flatten(net.gap(x)), int(net.rng.integers(100, 1500)))
    return net.finish(x, f"sweep{blocks}" + (f"-seed{seed}" if seed else ""))


def _branch(net: _Net, x: str, low: int, high: int) -> str:
    """One operator a CNN has few of, on the trunk `x`: a strided conv (regular or depthwise), a
    max or average pool (kernel 2, 3 or 5, stride 1 or 2, padded or not, ceil mode or not), or a
    concatenation of 3 to 8 narrow branches."""
    rng = net.rng
    c, size = net.shapes[x][1], net.shapes[x][2]
    kind = rng.choice(["depthwise", "strided", "maxpool", "avgpool", "concat"], p=[0.25, 0.15, 0.25, 0.2, 0.15])
    if kind in ("depthwise", "strided"):
        k = int(rng.choice([3, 5, 7] if kind == "depthwise" else [1, 3, 5, 7]))
        pad = int(rng.integers(0, 2)) * (k // 2)
        if size + 2 * pad < k:
            pad = k // 2
        width = c if kind == "depthwise" else _sweep_width(rng, low, high)
        return net.conv_bn(x, width, k, 2, pad=pad, groups=c if kind == "depthwise" else 1,
                           act=rng.choice(["relu", "relu6", None]))
    if kind in ("maxpool", "avgpool"):
        return _pool_branch(net, x, kind)
    return net.concat([net.conv(x, _sweep_width(rng, max(4, low // 2), max(8, high // 4)), 1) for _ in range(rng.integers(3, 9))])


def _pool_branch(net: _Net, x: str, kind: str) -> str:
    """A max or average pool (`kind`) of `x`: kernel 2, 3 or 5, stride 1 or 2, padded or not,
    ceil mode or not."""
    rng, size = net.rng, net.shapes[x][2]
    k, stride = int(rng.choice([2, 3, 5])), int(rng.integers(1, 3))
    pad = int(rng.integers(0, 2)) * (k // 2) if size > k else k // 2
    return (net.maxpool if kind == "maxpool" else net.avgpool)(x, k, stride, pad, ceil=bool(rng.integers(0, 2)))


def branch_sweep(blocks: int = 40, seed: int = 0) -> onnx.ModelProto:
    """`blocks` side branches off a random CNN trunk over the five resolutions of a 224x224 input
    (zoo.shape_sweep's): strided convs and depthwise convs, pools of every kind, many-input
    concatenations; each ends in a global average pool and a classifier, and the classifiers'
    outputs are summed. The operators the zoo's models have one or two of, in many shapes."""
    if blocks < len(_SWEEP_STAGES):
        raise MnovaError(f"a branch sweep needs at least {len(_SWEEP_STAGES)} blocks (one per resolution), got {blocks}")
    net = _Net(224, seed)
    classes = int(net.rng.integers(100, 1500))
    x, logits = "input", None
    for stage, (_size, low, high) in enumerate(_SWEEP_STAGES):
        x = net.conv_bn(_downsample(net, x, low, high), _sweep_width(net.rng, low, high), 1)
        for _ in range(blocks // len(_SWEEP_STAGES) + (stage < blocks % len(_SWEEP_STAGES))):
            branch = net.linear(net.flatten(net.gap(_branch(net, x, low, high))), classes)
            logits = branch if logits is None else net.add(logits, branch)
    return net.finish(logits, f"branches{blocks}" + (f"-seed{seed}" if seed else ""))


def pool_sweep(blocks: int = 40, seed: int = 0) -> onnx.ModelProto:
    """`blocks` max and average pools (zoo.branch_sweep's kinds) off a random CNN trunk over the
    five resolutions of a 224x224 input, each of a 1x1 conv of its own random width and followed
    by a global average pool; the pooled vectors are concatenated into one classifier. Pools and
    means are the operators the cost model misses most: this gives them about three times a
    branch sweep's pools per slice profiled (40 in about 800 new slices, against 20 in 1,400)."""
    if blocks < len(_SWEEP_STAGES):
        raise MnovaError(f"a pool sweep needs at least {len(_SWEEP_STAGES)} blocks (one per resolution), got {blocks}")
    net = _Net(224, seed)
    x, pooled = "input", []
    for stage, (_size, low, high) in enumerate(_SWEEP_STAGES):
        x = net.conv_bn(_downsample(net, x, low, high), _sweep_width(net.rng, low, high), 1)
        count = blocks // len(_SWEEP_STAGES) + (stage < blocks % len(_SWEEP_STAGES))
        pooled.append(net.concat([net.gap(_pool_branch(net, net.conv(x, _sweep_width(net.rng, low, high), 1),
                                                       str(net.rng.choice(["maxpool", "avgpool"]))))
                                  for _ in range(count)]))
    return net.finish(net.linear(net.flatten(net.concat(pooled)), int(net.rng.integers(100, 1500))),
                      f"pools{blocks}" + (f"-seed{seed}" if seed else ""))


# The sweeps by kind (mnova profile --sweep-kind), and the kind their model names begin with.
SWEEPS = {"blocks": shape_sweep, "branches": branch_sweep, "pools": pool_sweep}
_SWEEP_NAME = re.compile(r"(sweep|branches|pools)(\d+)(?:-seed(\d+))?")
_SWEEP_PREFIXES = {"sweep": "blocks", "branches": "branches", "pools": "pools"}


def sweep_kind(name: str) -> str | None:
    """"blocks" for a shape_sweep's model name (sweep40-seed3), "branches" for a branch_sweep's
    (branches40-seed1), "pools" for a pool_sweep's (pools40-seed1), None for any other name."""
    match = _SWEEP_NAME.fullmatch(name)
    return _SWEEP_PREFIXES[match[1]] if match else None


def sweep_named(name: str) -> onnx.ModelProto | None:
    """The sweep a model name such as sweep40-seed3 or branches40-seed1 was made by (None if the
    name is not a sweep's)."""
    match = _SWEEP_NAME.fullmatch(name)
    if not match:
        return None
    return SWEEPS[_SWEEP_PREFIXES[match[1]]](int(match[2]), seed=int(match[3] or 0))


MODELS: dict[str, ModelInfo] = {m.name: m for m in (
    ModelInfo("alexnet", 224, 63, 67, 61_100_840, "Krizhevsky et al. 2012; torchvision alexnet", _alexnet),
    ModelInfo("vgg16", 224, 32, 32, 138_357_544, "Simonyan & Zisserman 2015 (config D); torchvision vgg16", _vgg16),
    ModelInfo("resnet18", 224, 32, 32, 11_689_512, "He et al. 2016; torchvision resnet18", lambda n: _resnet(n, (2, 2, 2, 2), False)),
    ModelInfo("resnet50", 224, 32, 32, 25_557_032, "He et al. 2016 (v1.5 strides); torchvision resnet50", lambda n: _resnet(n, (3, 4, 6, 3), True)),
    ModelInfo("mobilenet_v2", 224, 32, 32, 3_504_872, "Sandler et al. 2018; torchvision mobilenet_v2", _mobilenet_v2),
    ModelInfo("squeezenet1_1", 224, 32, 48, 1_235_496, "Iandola et al. 2016 (v1.1); torchvision squeezenet1_1", _squeezenet1_1),
    ModelInfo("googlenet", 224, 32, 48, 6_624_904, "Szegedy et al. 2015; torchvision googlenet without aux heads", _googlenet),
    ModelInfo("inception_v3", 299, 75, 75, 23_834_568, "Szegedy et al. 2016; torchvision inception_v3 without the aux head (27,161,264 - 3,326,696)", _inception_v3),
    ModelInfo("densenet121", 224, 32, 32, 7_978_856, "Huang et al. 2017; torchvision densenet121", _densenet121),
    ModelInfo("efficientnet_b0", 224, 32, 32, 5_288_548, "Tan & Le 2019; torchvision efficientnet_b0", _efficientnet_b0),
    ModelInfo("randwire_ws", 224, 32, 64, 5_600_000, "Xie et al. 2019, RandWire-WS(4, 0.75) small regime, C=78 (paper: 5.6M)", _randwire_ws),
)}


def model_info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise MnovaError(f"unknown zoo model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build(name: str, input_size: int | None = None, seed: int = 0) -> onnx.ModelProto:
    """The ONNX model `name` at `input_size` (default: its standard size), weights seeded by `seed`."""
    info = model_info(name)
    size = info.standard_input_size if input_size is None else int(input_size)
    if size < info.min_input_size:
        raise MnovaError(f"{name} needs an input size of at least {info.min_input_size}, got {size}")
    net = _Net(size, seed)
    out = info.builder(net)
    return net.finish(out, name)


def count_params(model: onnx.ModelProto) -> int:
    """Trainable parameters, counted like torchvision (running statistics and constants excluded)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if not t.name.endswith(_NOT_PARAMS))


def export(name: str, path, input_size: int | None = None, seed: int = 0) -> onnx.ModelProto:
    """Write model `name` to `path` atomically; returns the model written."""
    from .commands._io import atomic_path

    model = build(name, input_size, seed)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return model
