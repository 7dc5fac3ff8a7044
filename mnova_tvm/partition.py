"""Plans and slicing rules: which part of every tensor each device computes and needs.

A Plan gives each operator a dimension (none / height / channel) and whole output rows or
channels per device. From it follow, with one set of rules used by the runtime, the cost model
and the memory check alike:
- segments: consecutive operators with the same partition that a device runs as one compiled
  function, so data crosses the network only where the partition changes. A height segment
  starts with at most one windowed operator (conv, pooling: its input rows carry the halo) and
  continues with row-local operators; a channel segment starts with any channel-splittable
  operator (a dense conv reads the whole input and a slice of the weights) and continues with
  channel-local ones (depthwise conv, pooling, batch norm, element-wise); a `none` segment is a
  run of operators on one device.
- regions: the rows or channels of every input and output each device reads and writes;
- per-device memory (what the runtime holds at its peak: code, weight slices, one arena, the
  output blocks, kernel workspace, one call's inputs and the RPC buffers of a transfer) and
  traffic (bytes to and from the coordinator per segment).
The graph must have its weight-only operators folded into constants (transform FoldConstant).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from .errors import MnovaError
from .graph import Node, OpGraph
from .memory import place_in_arena

DIMS = ("none", "height", "channel")
AXIS = {"height": 2, "channel": 1}
WINDOWED = {"relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d"}
POINTWISE_UNARY = {"relax.nn.relu", "relax.sigmoid", "relax.clip", "relax.nn.silu", "relax.tanh", "relax.exp",
                   "relax.nn.gelu", "relax.nn.leakyrelu", "relax.negative", "relax.sqrt"}
BINARY = {"relax.add", "relax.multiply", "relax.subtract", "relax.divide", "relax.maximum", "relax.minimum"}


# --- what each operator allows ---


def _out_shape(graph: OpGraph, node: Node) -> tuple[int, ...]:
    return graph.tensors[node.outputs[0]].shape if node.outputs else ()


def _activation_inputs(graph: OpGraph, node: Node) -> list[str]:
    return [t for t in node.inputs if graph.tensors[graph.base_of(t)].kind != "weight"]


def _window_fits(node: Node) -> bool:
    """Height slicing needs every output row to read at least one real input row: padding no
    wider than the kernel's reach."""
    reach = node.attrs.get("dilation", (1, 1))[0] * (node.attrs["kernel"][0] - 1)
    return max(node.attrs["padding"][0], node.attrs["padding"][2]) <= reach


def _role(graph: OpGraph, node: Node) -> dict[str, str]:
    """For each splittable dim: 'window' / 'whole-input' (may only start a segment) or 'local'."""
    op, out = node.op, _out_shape(graph, node)
    acts = _activation_inputs(graph, node)
    if len(node.outputs) != 1 and op != "relax.nn.batch_norm" or not acts:
        return {}
    rank4 = len(out) == 4
    if op == "relax.nn.conv2d":
        groups, cin = node.attrs.get("groups", 1), graph.tensors[node.inputs[0]].shape[1]
        if node.attrs.get("layout", "NCHW") != "NCHW" or len(node.inputs) != 2 or node.inputs[1] in acts:
            return {}
        channel = "whole-input" if groups == 1 else ("local" if groups == cin == out[1] else None)
        height = "window" if _window_fits(node) else None
        return {k: v for k, v in (("height", height), ("channel", channel)) if v}
    if op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
        if node.attrs.get("layout", "NCHW") != "NCHW":
            return {}
        return {"height": "window", "channel": "local"} if _window_fits(node) else {"channel": "local"}
    if op == "relax.nn.batch_norm":
        return {"height": "local", "channel": "local"} if rank4 and node.attrs.get("axis", 1) == 1 else {}
    if op == "relax.mean" and rank4 and tuple(node.attrs.get("axis", ())) == (2, 3):
        return {"channel": "local"}
    if op == "relax.matmul" and len(out) == 2 and len(acts) == 1 and node.inputs[0] == acts[0] \
            and len(graph.tensors[node.inputs[1]].shape) == 2:
        return {"channel": "whole-input"}
    if op in POINTWISE_UNARY or op in BINARY:
        shapes = [graph.tensors[t].shape for t in acts]
        if any(len(s) != len(out) for s in shapes):
            return {}
        roles = {}
        if rank4 and all(s[2] in (1, out[2]) for s in shapes):
            roles["height"] = "local"
        if len(out) in (2, 4) and all(s[1] in (1, out[1]) for s in shapes):
            roles["channel"] = "local"
        return roles
    if op == "relax.concat" and rank4 and node.attrs.get("axis") == 1:
        return {"height": "local"}
    return {}


def allowed_dims(graph: OpGraph, node: Node) -> tuple[str, ...]:
    return ("none", *_role(graph, node))


# --- plans ---


@dataclass(frozen=True)
class OpPartition:
    dim: str
    shares: tuple[int, ...]  # output rows (height), channels (channel), or 1 on the owner (none)

    @property
    def owner(self) -> int:
        return int(np.argmax(self.shares))


@dataclass(frozen=True)
class Plan:
    devices: tuple[str, ...]
    order: tuple[str, ...]
    ops: Mapping[str, OpPartition] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.ops, MappingProxyType):
            object.__setattr__(self, "ops", MappingProxyType(dict(self.ops)))

    def to_json(self, graph: OpGraph) -> dict:
        return {"devices": list(self.devices), "operators": [
            {"name": name, "op": graph.node_by_name[name].op.removeprefix("relax."),
             "dim": self.ops[name].dim, "shares": list(self.ops[name].shares)} for name in self.order]}

    def save(self, path, graph: OpGraph) -> None:
        from .commands._io import write_json

        write_json(path, self.to_json(graph))

    @classmethod
    def from_json(cls, data: dict, graph: OpGraph) -> "Plan":
        try:
            devices = tuple(data["devices"])
            ops = {o["name"]: OpPartition(o["dim"], tuple(int(s) for s in o["shares"])) for o in data["operators"]}
            order = tuple(o["name"] for o in data["operators"])
        except (KeyError, TypeError, ValueError) as err:
            raise MnovaError(f"plan JSON is malformed ({err}): it needs devices and operators[name, dim, shares]") from None
        plan = cls(devices, order, ops)
        validate_plan(graph, plan)
        return plan

    @classmethod
    def load(cls, path, graph: OpGraph) -> "Plan":
        try:
            data = json.loads(open(path).read())
        except FileNotFoundError:
            raise MnovaError(f"plan file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise MnovaError(f"plan file {path} is not valid JSON ({err.msg})") from None
        return cls.from_json(data, graph)


def split_size(graph: OpGraph, name: str, dim: str) -> int:
    """How many rows (height) or channels (channel) the output of `name` has."""
    return _out_shape(graph, graph.node_by_name[name])[AXIS[dim]] if dim != "none" else 1


def quantise(total: int, proportions: Sequence[float], granule: int = 1) -> tuple[int, ...]:
    """Whole units per device in proportion (largest remainder), in multiples of `granule` (a
    divisor of `total`); sums to `total`."""
    count = total // granule
    p = np.clip(np.asarray(proportions, dtype=float), 0, None)
    p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
    raw = p * count
    units = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - units), kind="stable")[: count - units.sum()]:
        units[i] += 1
    return tuple(granule * int(u) for u in units)


# Channel splits move whole blocks of this many channels where a layer has enough of them: a slice
# of 250 of squeezenet1_1's 1000 classifier channels ran at 0.17 of the whole layer's FLOP rate
# (no vector width divides 250, so its kernel fell back to 13-pixel rows), 248 or 256 run as fast.
CHANNEL_BLOCKS = (16, 8, 4)
MIN_CHANNEL_BLOCKS = 8


def channel_granule(channels: int) -> int:
    """The largest of CHANNEL_BLOCKS that divides `channels` into at least MIN_CHANNEL_BLOCKS
    blocks (16 fills an AVX-512 vector, 8 AVX2, 4 NEON), else 1."""
    return next((g for g in CHANNEL_BLOCKS if channels % g == 0 and channels // g >= MIN_CHANNEL_BLOCKS), 1)


def partition_op(graph: OpGraph, name: str, dim: str, proportions: Sequence[float]) -> OpPartition:
    if dim == "none":
        shares = [0] * len(proportions)
        shares[int(np.argmax(proportions))] = 1
        return OpPartition("none", tuple(shares))
    total = split_size(graph, name, dim)
    return OpPartition(dim, quantise(total, proportions, channel_granule(total) if dim == "channel" else 1))


def validate_plan(graph: OpGraph, plan: Plan) -> None:
    why = graph.topological_violation(plan.order)
    if why is not None:
        raise MnovaError(f"plan order is invalid: {why}")
    n = len(plan.devices)
    for name in plan.order:
        part = plan.ops.get(name)
        if part is None:
            raise MnovaError(f"plan has no partition for operator {name}")
        node = graph.node_by_name[name]
        if part.dim not in allowed_dims(graph, node):
            raise MnovaError(f"operator {name} ({node.op}) cannot be split by {part.dim}; allowed: {', '.join(allowed_dims(graph, node))}")
        if len(part.shares) != n or any(s < 0 for s in part.shares):
            raise MnovaError(f"operator {name}: shares {part.shares} must be {n} non-negative integers")
        expected = split_size(graph, name, part.dim)
        if sum(part.shares) != expected:
            raise MnovaError(f"operator {name}: shares sum to {sum(part.shares)}, the {part.dim} has {expected}")


def single_device_plan(graph: OpGraph, devices: Sequence[str], device: int, order=None) -> Plan:
    order = tuple(order or graph.import_order)
    onehot = [0.0] * len(devices)
    onehot[device] = 1.0
    return Plan(tuple(devices), order, {n: partition_op(graph, n, "none", onehot) for n in order})


def uniform_plan(graph: OpGraph, devices: Sequence[str], dim: str, proportions: Sequence[float],
                 order=None, fallback_device: int = 0) -> Plan:
    """Every operator split by `dim` in `proportions` where it allows it, else on one device."""
    order = tuple(order or graph.import_order)
    onehot = [0.0] * len(devices)
    onehot[fallback_device] = 1.0
    ops = {}
    for name in order:
        ok = dim in allowed_dims(graph, graph.node_by_name[name])
        ops[name] = partition_op(graph, name, dim if ok else "none", proportions if ok else onehot)
    return Plan(tuple(devices), order, ops)


# --- regions, segments, memory, traffic ---

Region = tuple[int, int, int]  # (axis, lo, hi); axis -1 = the whole tensor


def _ranges(shares: Sequence[int]) -> list[tuple[int, int]]:
    bounds = np.concatenate([[0], np.cumsum(shares)])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class Segment:
    index: int
    dim: str
    shares: tuple[int, ...]
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]  # tensors it reads from the coordinator
    outputs: tuple[str, ...]  # tensors it returns to the coordinator
    # per device: region of each input it receives and of each output it computes
    input_regions: tuple[Mapping[str, Region], ...]
    output_regions: tuple[Mapping[str, Region], ...]
    # per device: for each node, the output region it computes (height: rows, channel: channels)
    node_regions: tuple[Mapping[str, Region], ...]

    def active(self, device: int) -> bool:
        return self.shares[device] > 0


def _window_input_rows(node: Node, lo: int, hi: int, in_rows: int) -> tuple[int, int, int, int]:
    """Input rows [a, b) that output rows [lo, hi) of a conv/pool read, and the padding (top,
    bottom) the sliced operator needs (only at the true image border)."""
    kh = node.attrs["kernel"][0]
    sh = node.attrs["strides"][0]
    dh = node.attrs.get("dilation", (1, 1))[0]
    pad_top = node.attrs["padding"][0]
    start = lo * sh - pad_top
    end = (hi - 1) * sh - pad_top + dh * (kh - 1) + 1
    a, b = max(start, 0), min(end, in_rows)
    return a, b, a - start, end - b


def _follows(graph: OpGraph, seg_dim: str, seg_first: Node, node: Node) -> bool:
    """Can `node` join the segment that `seg_first` started (same partition assumed)?"""
    role = _role(graph, node).get(seg_dim)
    if role != "local":
        return False
    size = _out_shape(graph, seg_first)[AXIS[seg_dim]]
    return _out_shape(graph, node)[AXIS[seg_dim]] == size and len(_out_shape(graph, node)) == len(_out_shape(graph, seg_first))


def segment_groups(graph: OpGraph, plan: Plan) -> list[tuple[str, ...]]:
    """The plan's operators grouped into segments: consecutive operators with the same partition
    that can run without exchanging data."""
    validate_plan(graph, plan)
    groups: list[list[str]] = []
    for name in plan.order:
        node, part = graph.node_by_name[name], plan.ops[name]
        if groups:
            first = graph.node_by_name[groups[-1][0]]
            prev = plan.ops[groups[-1][0]]
            same = prev.dim == part.dim and prev.shares == part.shares
            if same and (part.dim == "none" or _follows(graph, part.dim, first, node)):
                groups[-1].append(name)
                continue
        groups.append([name])
    return [tuple(group) for group in groups]


def segments(graph: OpGraph, plan: Plan, groups: Sequence[tuple[str, ...]] | None = None,
             which: Sequence[int] | None = None) -> list[Segment]:
    """The plan's segments, with every device's regions (only those at indexes `which`, if given)."""
    groups = segment_groups(graph, plan) if groups is None else groups
    needed_later: dict[str, int] = {}
    position = {name: i for i, group in enumerate(groups) for name in group}
    for node in graph.nodes:
        for t in node.inputs:
            p = graph.producer.get(t)
            if p is not None:
                needed_later[t] = max(needed_later.get(t, -1), position[node.name])
    indexes = range(len(groups)) if which is None else which
    return [_segment(graph, plan, index, list(groups[index]), needed_later) for index in indexes]


def _segment(graph: OpGraph, plan: Plan, index: int, group: list[str], needed_later: dict) -> Segment:
    part = plan.ops[group[0]]
    produced = {t for name in group for t in graph.node_by_name[name].outputs}
    inputs = tuple(dict.fromkeys(t for name in group for t in _activation_inputs(graph, graph.node_by_name[name])
                                 if t not in produced))
    outputs = tuple(t for name in group for t in graph.node_by_name[name].outputs
                    if needed_later.get(t, -1) > index or t in graph.graph_outputs)
    n = len(plan.devices)
    in_regions, out_regions, node_regions = [], [], []
    if part.dim == "none":
        for d in range(n):
            own = d == part.owner
            in_regions.append(MappingProxyType({t: (-1, 0, 0) for t in inputs} if own else {}))
            out_regions.append(MappingProxyType({t: (-1, 0, 0) for t in outputs} if own else {}))
            node_regions.append(MappingProxyType({name: (-1, 0, 0) for name in group} if own else {}))
        return Segment(index, "none", part.shares, tuple(group), inputs, outputs,
                       tuple(in_regions), tuple(out_regions), tuple(node_regions))
    axis = AXIS[part.dim]
    first = graph.node_by_name[group[0]]
    role = _role(graph, first)[part.dim]
    for lo, hi in _ranges(part.shares):
        regions: dict[str, Region] = {}
        nodes_r = {name: (axis, lo, hi) for name in group}
        for t in inputs:
            shape = graph.tensors[t].shape
            readers = [graph.node_by_name[nm] for nm in group if t in graph.node_by_name[nm].inputs]
            if shape[axis] == 1 and any(graph.tensors[t].shape != _out_shape(graph, r) for r in readers):
                regions[t] = (-1, 0, 0)  # broadcast along the split axis: the whole (small) tensor
            elif first in readers and role == "window" and part.dim == "height":
                a, b, _, _ = _window_input_rows(first, lo, hi, shape[2])
                regions[t] = (2, a, b)
            elif first in readers and role == "whole-input":
                regions[t] = (-1, 0, 0)
            else:
                regions[t] = (axis, lo, hi)
        in_regions.append(MappingProxyType(regions))
        out_regions.append(MappingProxyType({t: (axis, lo, hi) for t in outputs}))
        node_regions.append(MappingProxyType(nodes_r))
    return Segment(index, part.dim, part.shares, tuple(group), inputs, outputs,
                   tuple(in_regions), tuple(out_regions), tuple(node_regions))


def region_shape(shape: tuple[int, ...], region: Region) -> tuple[int, ...]:
    axis, lo, hi = region
    if axis < 0:
        return shape
    return tuple(hi - lo if i == axis else s for i, s in enumerate(shape))


def region_bytes(graph: OpGraph, tensor: str, region: Region) -> int:
    t = graph.tensors[tensor]
    return math.prod(region_shape(t.shape, region)) * _itemsize(t.dtype)


@functools.lru_cache(maxsize=None)
def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def sliced_weight_bytes(graph: OpGraph, node: Node, dim: str, lo: int, hi: int) -> int:
    """Bytes of the constants a device holds for its slice of `node`."""
    total = 0
    out = _out_shape(graph, node)
    for t in node.inputs:
        if graph.tensors[graph.base_of(t)].kind != "weight":
            continue
        tensor = graph.tensors[t]
        # a reshaped constant (a bias as 1xCx1x1) is a view, without bytes of its own: its constant's
        nbytes = math.prod(tensor.shape) * _itemsize(tensor.dtype) if tensor.view_of else tensor.nbytes
        if dim == "channel" and node.op == "relax.matmul":
            total += nbytes * (hi - lo) // max(tensor.shape[-1], 1)
        elif dim == "channel" and tensor.shape and tensor.shape[0] == out[1] and node.op in ("relax.nn.conv2d",):
            total += nbytes * (hi - lo) // out[1]
        elif dim == "channel" and node.op == "relax.nn.batch_norm":
            total += nbytes * (hi - lo) // out[1]
        elif dim == "channel" and len(tensor.shape) >= 1 and out[1] in tensor.shape and nbytes > 0:
            total += nbytes * (hi - lo) // out[1]
        else:
            total += nbytes
    return total


# What a device holds besides its weights and activations, measured on the emulated testbed
# (cgroup peak over the idle server with its RPC session open):
# - its library's code (the .so in the page cache and mapped: host libraries measured 158 KiB
#   for 5 convolutions and 13 other operators up to 1.7 MiB for 57 and 140; the per-operator
#   bound below covers them all), about 1 MiB more once the library is loaded (its module, the
#   VM and the session's bookkeeping: 1.0-1.2 MiB measured beyond the .so; 1.25 MiB allowed), and
#   per segment its function's slicing and padding kernels and the heap its transfers leave
#   fragmented (a device running 57 segments of squeezenet held 1.4 MiB more than 1 segment);
# - TVM RPC's buffers while a tensor crosses the link: an upload of n bytes peaks at ~2.3 n with
#   the tensor (the message is received whole, then copied), a download at up to ~2 n above the
#   tensor it reads (2.05 n measured at 1 MiB; 2.5 n allowed).
LOADED_LIBRARY_BYTES = 5 * 2**18
CODE_BYTES_PER_CONV = 32 * 2**10
CODE_BYTES_PER_OPERATOR = 2**10
CODE_BYTES_PER_SEGMENT = 24 * 2**10
UPLOAD_EXTRA = 1.5  # in flight beyond the tensor, times its bytes
# The pool settles at two sets of a segment's output blocks: a call's outputs are still held on the
# device when a later call allocates its own (measured on a segment returning two 0.74 MiB tensors:
# +1.5 MiB between the first run and the tenth, then flat).
RETURNED_SETS = 2
DOWNLOAD_EXTRA = 2.5


@dataclass(frozen=True)
class SegmentMemory:
    """What one device's function for a segment needs, by where the runtime keeps it."""

    weights: int  # its weight slices, uploaded once and held
    largest_weight: int  # the largest of them (its upload's buffers peak while the library loads)
    arena: int  # liveness peak of its stored intermediates: its arena (transform.DeviceArenaPlanMemory)
    returned: int  # how many tensors it returns, each in a block of its own
    largest_returned: int  # the largest of them
    workspace: int  # the largest padded input a kernel copies into its workspace
    inputs: int  # the input regions it receives, held for the call
    transfer: int  # the largest single input or output crossing the link
    code: int  # its share of the library's code (the segment's function and operators)


def _padded_bytes(graph: OpGraph, node: Node, region: Region) -> int:
    """Bytes of the zero-padded copy of its input a conv with padding, or any pooling (ceil mode
    pads the far border too), builds in the kernel's workspace."""
    pads = node.attrs.get("padding", (0, 0, 0, 0))
    if node.op not in WINDOWED or node.op == "relax.nn.conv2d" and not any(pads):
        return 0
    top, left, bottom, right = pads
    if node.op != "relax.nn.conv2d":
        bottom, right = bottom + node.attrs["strides"][0] - 1, right + node.attrs["strides"][1] - 1
    data = _activation_inputs(graph, node)[0]
    shape = region_shape(graph.tensors[data].shape, region)
    return math.prod(shape[:2]) * (shape[2] + top + bottom) * (shape[3] + left + right) * _itemsize(graph.tensors[data].dtype)


# Operators whose output an element-wise successor computes in the same kernel (TVM's FuseOps).
# Element-wise kernels the importer emitted as call_tir (a Clip as maximum and minimum) count.
_ELEMENTWISE_KERNELS = re.compile(r"call_tir:(maximum|minimum|add|multiply|subtract|divide|relu|clip|sigmoid|tanh|exp)\d*")


def _elementwise(op: str) -> bool:
    return op in POINTWISE_UNARY or op in BINARY or op == "relax.nn.batch_norm" or bool(_ELEMENTWISE_KERNELS.fullmatch(op))


def _fuses_into_successor(graph: OpGraph, node: Node) -> bool:
    """A batch norm only when it folds into the convolution before it (FoldBatchnormToConv2D):
    decomposed on its own, its tuple keeps its output apart from the next kernel."""
    if node.op == "relax.nn.batch_norm":
        data = _activation_inputs(graph, node)[0]
        producer = graph.producer.get(data)
        return producer is not None and graph.node_by_name[producer].op == "relax.nn.conv2d" \
            and graph.consumers[data] == (node.name,)
    return node.op in WINDOWED or node.op == "relax.matmul" or _elementwise(node.op)


def _fused_away(graph: OpGraph, seg: Segment) -> set[str]:
    """Tensors of the segment that fusion keeps inside a kernel (never stored): the output of a
    conv, pooling, matmul or element-wise operator whose one reader is the element-wise operator
    that follows it in the kernel (conv -> bias add -> ReLU is one kernel storing one tensor).
    Of an element-wise operator's inputs only one is fused, the smallest (a residual add keeps
    the other branch)."""
    inside = set(seg.nodes)
    fused = set()
    for name in seg.nodes:
        node = graph.node_by_name[name]
        if not _elementwise(node.op):
            continue
        candidates = [t for t in dict.fromkeys(_activation_inputs(graph, node))
                      if graph.producer.get(t) in inside and graph.consumers[t] == (name,) and t not in seg.outputs
                      and graph.tensors[t].view_of is None
                      and _fuses_into_successor(graph, graph.node_by_name[graph.producer[t]])]
        if candidates:
            fused.add(min(candidates, key=lambda t: graph.tensors[t].nbytes))
    return fused


def segment_memory(graph: OpGraph, seg: Segment, device: int) -> SegmentMemory:
    """The memory one device's function for `seg` needs (all zero when the device has no part)."""
    if not seg.active(device):
        return SegmentMemory(0, 0, 0, 0, 0, 0, 0, 0, 0)
    weights = [sliced_weight_bytes(graph, graph.node_by_name[name], seg.dim, *seg.node_regions[device][name][1:])
               for name in seg.nodes]
    inputs = {t: region_bytes(graph, t, r) for t, r in seg.input_regions[device].items()}
    returned = {t: region_bytes(graph, t, r) for t, r in seg.output_regions[device].items()}
    fused = _fused_away(graph, seg)
    # A fused kernel runs at its last operator, reading its first operators' inputs there.
    position = {name: i for i, name in enumerate(seg.nodes)}
    kernel_end = {}
    for name in reversed(seg.nodes):
        inner = [t for t in graph.node_by_name[name].outputs if t in fused]
        kernel_end[name] = kernel_end[graph.consumers[inner[0]][0]] if inner else position[name]
    last_use, workspace = {}, 0
    for name in seg.nodes:
        node = graph.node_by_name[name]
        for t in {*node.inputs, *(graph.base_of(t) for t in node.inputs)}:  # a view keeps its base
            last_use[t] = max(last_use.get(t, -1), kernel_end[name])
        if node.op in WINDOWED:
            data = _activation_inputs(graph, node)[0]
            region = seg.input_regions[device].get(data) or seg.node_regions[device].get(graph.producer.get(data), (-1, 0, 0))
            workspace = max(workspace, _padded_bytes(graph, node, region))
    # The stored intermediates, placed as DeviceArenaPlanMemory places them (from their kernel to
    # their last reader; one cut from a returned tensor lives to the end).
    sizes, life = {}, {}
    for i, name in enumerate(seg.nodes):
        for t in graph.node_by_name[name].outputs:
            computed = region_bytes(graph, t, seg.node_regions[device][name])
            # a returned tensor computed whole is returned as it is; one cut to its region first is an intermediate
            if computed and graph.tensors[t].view_of is None and t not in fused and computed > returned.get(t, 0):
                sizes[t] = computed
                life[t] = (i, len(seg.nodes) if t in returned else max(last_use.get(t, i), i))
    arena = place_in_arena(sizes, life)[1]
    code = CODE_BYTES_PER_SEGMENT + sum(CODE_BYTES_PER_CONV if graph.node_by_name[name].op == "relax.nn.conv2d"
                                        else CODE_BYTES_PER_OPERATOR for name in seg.nodes)
    return SegmentMemory(sum(weights), max(weights, default=0), arena, len(returned), max(returned.values(), default=0),
                         workspace, sum(inputs.values()), max([*inputs.values(), *returned.values()], default=0), code)


def footprints(table: np.ndarray) -> np.ndarray:
    """Each device's peak memory from its segments' needs, `table[segment, device]` holding the
    SegmentMemory fields in order, as the runtime holds them: the code and the weights
    throughout; the VM's pooled allocator keeps one arena and two sets of output blocks (of the
    largest output's size, as many as a segment returns tensors), and the kernels' workspace
    pool its largest block, once used; the inputs of one call at a time with the RPC buffers of its
    largest transfer. While the library loads, its weights arrive tensor by tensor, the largest
    in flight."""
    weights, largest_weight, arena, returned, largest_returned, workspace, inputs, transfer, code = \
        np.moveaxis(np.asarray(table), -1, 0)
    held = weights.sum(axis=0)
    loading = held + UPLOAD_EXTRA * largest_weight.max(axis=0)
    running = (held + arena.max(axis=0) + RETURNED_SETS * returned.max(axis=0) * largest_returned.max(axis=0)
               + workspace.max(axis=0)
               + (inputs + DOWNLOAD_EXTRA * transfer).max(axis=0))
    code_bytes = code.sum(axis=0)
    return np.where(code_bytes > 0, LOADED_LIBRARY_BYTES + code_bytes + np.maximum(loading, running), 0).astype(np.int64)


def device_memory(graph: OpGraph, plan: Plan, segs: list[Segment] | None = None) -> tuple[int, ...]:
    """Per device: the peak bytes its part of the plan needs (footprints of its segments)."""
    segs = segments(graph, plan) if segs is None else segs
    table = [[dataclasses.astuple(segment_memory(graph, seg, d)) for d in range(len(plan.devices))] for seg in segs]
    return tuple(int(m) for m in footprints(np.array(table, dtype=np.int64).reshape(len(segs), len(plan.devices), -1)))


@dataclass(frozen=True)
class Transfer:
    segment: int
    device: int
    tensor: str
    nbytes: int
    direction: str  # "send" (coordinator -> device) or "receive"


def traffic(graph: OpGraph, plan: Plan, segs: list[Segment] | None = None) -> list[Transfer]:
    """Every transfer the runtime makes, in order: inputs out to devices, outputs back."""
    segs = segments(graph, plan) if segs is None else segs
    moves = []
    for seg in segs:
        for d in range(len(plan.devices)):
            for t, r in seg.input_regions[d].items():
                moves.append(Transfer(seg.index, d, t, region_bytes(graph, t, r), "send"))
            for t, r in seg.output_regions[d].items():
                moves.append(Transfer(seg.index, d, t, region_bytes(graph, t, r), "receive"))
    return moves


@dataclass(frozen=True)
class SliceWork:
    """One operator slice a device runs: what the cost model predicts a latency for."""

    segment: int
    device: int
    node: str
    op: str
    dim: str
    out_shape: tuple[int, ...]
    flops: int


def device_work(graph: OpGraph, plan: Plan, segs: list[Segment] | None = None) -> list[SliceWork]:
    segs = segments(graph, plan) if segs is None else segs
    work = []
    for seg in segs:
        for d in range(len(plan.devices)):
            if not seg.active(d):
                continue
            for name in seg.nodes:
                node = graph.node_by_name[name]
                full = _out_shape(graph, node)
                shape = region_shape(full, seg.node_regions[d][name])
                fraction = int(np.prod(shape)) / max(int(np.prod(full)), 1)
                work.append(SliceWork(seg.index, d, name, node.op, seg.dim, shape, int(node.flops * fraction)))
    return work


def op_segment(graph: OpGraph, name: str, part: OpPartition, devices: Sequence[str]) -> Segment:
    """The segment one operator forms on its own under `part` (what profiling measures)."""
    plan = Plan(tuple(devices), (name,), {name: part})
    return _segment(graph, plan, 0, [name], {t: 1 for t in graph.node_by_name[name].outputs})
