"""OpGraph: the plain-data operator DAG every search and planner works on.

It is built once from a Relax main function's dataflow block (see `from_relax`) and is then
independent of TVM, so BTSearch, the partitioner and GenEFlow can be tested without compiling.

Conventions every stage relies on:
- A Node is one Relax call binding; `Node.name` is the binding var's name. A call that returns a
  tuple is one node with several outputs: the TupleGetItem bindings that read it are folded into
  it (`Node.bindings` lists the call's var first, then those reads, in the order to emit them).
- `Node.inputs` are tensor names in argument order, weights included; `Node.outputs` are the
  tensors it defines.
- A Tensor of kind "weight" is a constant or a parameter; it is never counted in the activation
  peak. A view (`view_of` set) has nbytes 0 and keeps its base alive.
- `Node.attrs` uses plain Python values (ints, tuples, strings) under these keys where they
  apply: conv2d/pooling: "kernel" (kh, kw), "strides" (sh, sw), "padding" (top, left, bottom,
  right), "dilation" (dh, dw), "groups", "layout"; reductions/concat/softmax/split: "axis" or
  "axes"; plus any other Relax attr by its own name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping

TENSOR_KINDS = ("input", "activation", "output", "weight")


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    kind: str
    view_of: str | None = None

    def __post_init__(self):
        if self.kind not in TENSOR_KINDS:
            raise ValueError(f"tensor {self.name}: kind {self.kind!r} is not one of {TENSOR_KINDS}")
        if self.nbytes < 0:
            raise ValueError(f"tensor {self.name}: negative size {self.nbytes}")


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    flops: int = 0
    bindings: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.attrs, MappingProxyType):
            object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))
        if not self.bindings:
            object.__setattr__(self, "bindings", (self.name,))


@dataclass(frozen=True, eq=False)
class OpGraph:
    """Nodes in import (binding) order, tensors by name, and the function's inputs and outputs."""

    nodes: tuple[Node, ...]
    tensors: Mapping[str, Tensor]
    graph_inputs: tuple[str, ...]
    graph_outputs: tuple[str, ...]
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.tensors, MappingProxyType):
            object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))
        self._validate()

    def _validate(self):
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("malformed graph: duplicate node names")
        produced: dict[str, str] = {}
        for node in self.nodes:
            for t in node.outputs:
                if t in produced:
                    raise ValueError(f"malformed graph: tensor {t} produced by {produced[t]} and {node.name}")
                produced[t] = node.name
        for node in self.nodes:
            for t in (*node.inputs, *node.outputs):
                if t not in self.tensors:
                    raise ValueError(f"malformed graph: node {node.name} names unknown tensor {t}")
            for t in node.inputs:
                kind = self.tensors[t].kind
                if t not in produced and kind not in ("input", "weight"):
                    raise ValueError(f"malformed graph: node {node.name} reads {t}, which nothing produces")
        for t in self.graph_outputs:
            if t not in self.tensors:
                raise ValueError(f"malformed graph: graph output {t} is not a tensor")
        for t in self.tensors.values():
            if t.view_of is not None and t.view_of not in self.tensors:
                raise ValueError(f"malformed graph: {t.name} is a view of unknown tensor {t.view_of}")
        if self.topological_violation(names) is not None:
            raise ValueError("malformed graph: the import order is not topological (a cycle?)")

    # --- derived structure (computed once, cached) ---

    @cached_property
    def node_by_name(self) -> Mapping[str, Node]:
        return MappingProxyType({n.name: n for n in self.nodes})

    @cached_property
    def producer(self) -> Mapping[str, str]:
        """Tensor name -> name of the node that produces it (graph inputs and weights have none)."""
        return MappingProxyType({t: n.name for n in self.nodes for t in n.outputs})

    @cached_property
    def consumers(self) -> Mapping[str, tuple[str, ...]]:
        """Tensor name -> names of the nodes that read it, in import order, each once."""
        out: dict[str, list[str]] = {t: [] for t in self.tensors}
        for n in self.nodes:
            for t in dict.fromkeys(n.inputs):
                out[t].append(n.name)
        return MappingProxyType({t: tuple(v) for t, v in out.items()})

    @cached_property
    def predecessors(self) -> Mapping[str, tuple[str, ...]]:
        """Node name -> the nodes whose outputs it reads (data dependencies)."""
        prod = self.producer
        return MappingProxyType({
            n.name: tuple(dict.fromkeys(prod[t] for t in n.inputs if t in prod)) for n in self.nodes
        })

    @cached_property
    def successors(self) -> Mapping[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for p in self.predecessors[n.name]:
                out[p].append(n.name)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    def base_of(self, tensor: str) -> str:
        """The tensor that owns the storage of `tensor` (itself unless it is a view)."""
        seen = set()
        while self.tensors[tensor].view_of is not None:
            if tensor in seen:
                raise ValueError(f"malformed graph: view cycle at {tensor}")
            seen.add(tensor)
            tensor = self.tensors[tensor].view_of
        return tensor

    @property
    def import_order(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def topological_violation(self, order) -> str | None:
        """None if `order` is a topological permutation of the nodes, else why not."""
        order = list(order)
        names = {n.name for n in self.nodes}
        if len(order) != len(names) or set(order) != names:
            missing = sorted(names - set(order))[:3]
            extra = sorted(set(order) - names)[:3]
            dup = len(order) - len(set(order))
            return f"not a permutation of the {len(names)} nodes (missing {missing}, unknown {extra}, {dup} repeated)"
        done = set()
        for name in order:
            for p in self.predecessors[name]:
                if p not in done:
                    return f"{name} is placed before its producer {p}"
            done.add(name)
        return None

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values() if t.kind == "weight")

    @property
    def flops(self) -> int:
        return sum(n.flops for n in self.nodes)


# --- building an OpGraph from a Relax module (TVM at the edge) ---

# Ops that TVM executes without a copy (RewriteDataflowReshape turns them into vm.builtin.reshape).
VIEW_OPS = frozenset({"relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.flatten", "alias"})
_ATTR_SKIP = frozenset({"get_int", "get_int_tuple", "get_str", "id_", "is_", "same_as"})


def _plain(value):
    """A TVM attribute value as plain Python (ints, floats, strings, tuples), or None if opaque."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value") and not hasattr(value, "shape"):  # IntImm / FloatImm / StringImm
        return value.value
    try:
        items = list(value)
    except TypeError:
        return None
    converted = tuple(_plain(v) for v in items)
    return None if any(c is None for c in converted) else converted


def _call_attrs(call) -> dict[str, Any]:
    attrs = getattr(call, "attrs", None)
    if attrs is None:
        return {}
    out = {}
    for key in dir(attrs):
        if key.startswith("_") or key in _ATTR_SKIP:
            continue
        try:
            value = _plain(getattr(attrs, key))
        except Exception:  # some fields are not readable from Python
            continue
        if value is not None and not callable(value):
            out[key] = value
    return out


def _shape_dtype(ty) -> tuple[tuple[int, ...], str]:
    shape = tuple(int(v) for v in ty.shape.values)
    return shape, str(ty.dtype)


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    import numpy as np

    count = 1
    for d in shape:
        count *= d
    return count * np.dtype(dtype).itemsize


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _normalise_attrs(op: str, attrs: dict[str, Any], in_shapes: list[tuple[int, ...]]) -> dict[str, Any]:
    if op in ("relax.nn.conv2d",):
        attrs["kernel"] = tuple(in_shapes[1][2:4])
        attrs["layout"] = attrs.get("data_layout", "NCHW")
    if "pool_size" in attrs:
        attrs["kernel"] = tuple(attrs["pool_size"])
    if "padding" in attrs and len(attrs["padding"]) == 2:
        attrs["padding"] = tuple(attrs["padding"]) * 2
    return attrs


def node_flops(op: str, attrs: Mapping[str, Any], in_shapes: list[tuple[int, ...]], out_shapes: list[tuple[int, ...]]) -> int:
    """Floating-point operations of one operator (multiply-add counts 2)."""
    if op in VIEW_OPS or not out_shapes:
        return 0
    out = out_shapes[0]
    if op == "relax.nn.conv2d":
        kh, kw = attrs["kernel"]
        cin_per_group = in_shapes[1][1]
        return 2 * _prod(out) * cin_per_group * kh * kw
    if op == "relax.matmul":
        return 2 * _prod(out) * in_shapes[0][-1]
    if "kernel" in attrs and "pool" in op:
        kh, kw = attrs["kernel"]
        return _prod(out) * kh * kw
    if op.startswith("relax.nn.adaptive") or op in ("relax.mean", "relax.sum", "relax.max", "relax.min"):
        return _prod(in_shapes[0])
    return sum(_prod(s) for s in out_shapes)


def binding_names(func) -> list[str]:
    """Unique, deterministic names for the bindings of main's dataflow block, in order."""
    names, seen = [], {}
    for binding in dataflow_bindings(func):
        base = binding.var.name
        k = seen.get(base, 0)
        seen[base] = k + 1
        names.append(base if k == 0 else f"{base}#{k}")
    return names


def dataflow_bindings(func):
    blocks = func.body.blocks
    if len(blocks) != 1:
        raise ValueError(f"expected main to have one dataflow block, found {len(blocks)} blocks (run Normalize first?)")
    return list(blocks[0].bindings)


def from_relax(mod, name: str = "") -> OpGraph:
    """The OpGraph of `mod["main"]`'s dataflow block: call bindings become nodes.

    TupleGetItem bindings are folded into the node that produced the tuple; a binding whose
    value is a plain var is an "alias" node (a view); a Tuple binding is a "tuple" node with no
    outputs of its own (its fields are what the function returns). Constants are weights.
    """
    import tvm
    from tvm import relax

    func = mod["main"]
    bindings = dataflow_bindings(func)
    names = binding_names(func)
    var_name: dict[Any, str] = {}
    tensors: dict[str, Tensor] = {}
    consts: dict[Any, str] = {}

    for p in func.params:
        shape, dtype = _shape_dtype(p.ty)
        tensors[p.name] = Tensor(p.name, shape, dtype, _nbytes(shape, dtype), "input")
        var_name[p] = p.name
    graph_inputs = tuple(p.name for p in func.params)

    def tensor_of(expr) -> list[str]:
        if isinstance(expr, relax.Tuple):
            return [t for field in expr.fields for t in tensor_of(field)]
        if isinstance(expr, relax.Var):
            return [var_name[expr]] if not isinstance(var_name[expr], tuple) else list(var_name[expr])
        if type(expr).__name__ in ("GenericConst", "Constant"):
            if expr not in consts:
                cname = f"const{len(consts)}"
                shape, dtype = _shape_dtype(expr.ty)
                tensors[cname] = Tensor(cname, shape, dtype, _nbytes(shape, dtype), "weight")
                consts[expr] = cname
            return [consts[expr]]
        return []  # shapes, prim values, strings: not tensors

    nodes: list[Node] = []
    node_of_tuple: dict[str, int] = {}
    for binding, bname in zip(bindings, names):
        var, value = binding.var, binding.value
        if isinstance(value, relax.TupleGetItem):
            producer = var_name[value.tuple_value]
            idx = node_of_tuple[producer if isinstance(producer, str) else producer[0]]
            node = nodes[idx]
            out = node.outputs[value.index]
            var_name[var] = out
            nodes[idx] = Node(node.name, node.op, node.inputs, node.outputs, node.attrs, node.flops,
                              (*node.bindings, bname))
            continue
        if isinstance(value, relax.Call):
            if isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
                op = f"call_tir:{value.args[0].name_hint}"
                args = list(value.args[1].fields) if isinstance(value.args[1], relax.Tuple) else [value.args[1]]
            elif isinstance(value.op, tvm.ir.Op):
                op, args = value.op.name, list(value.args)
            else:  # a call to another function of the module (e.g. a fused group)
                op, args = getattr(value.op, "name_hint", str(value.op)), list(value.args)
            attrs = _call_attrs(value)
        elif isinstance(value, relax.Var):
            op, args, attrs = "alias", [value], {}
        elif isinstance(value, relax.Tuple):
            op, args, attrs = "tuple", list(value.fields), {}
        elif type(value).__name__ in ("GenericConst", "Constant"):
            op, args, attrs = "constant", [value], {}
        else:
            raise ValueError(f"unsupported binding {bname}: {type(value).__name__}")
        inputs = [t for a in args for t in tensor_of(a)]
        in_shapes = [tensors[t].shape for t in inputs]
        ty = var.ty
        if op == "tuple":
            outputs: list[str] = []
            var_name[var] = tuple(inputs)
        elif isinstance(ty, relax.TupleType):
            outputs = []
            for i, field_ty in enumerate(ty.fields):
                shape, dtype = _shape_dtype(field_ty)
                tname = f"{bname}.{i}"
                tensors[tname] = Tensor(tname, shape, dtype, _nbytes(shape, dtype), "activation")
                outputs.append(tname)
            var_name[var] = bname
            node_of_tuple[bname] = len(nodes)
        else:
            shape, dtype = _shape_dtype(ty)
            view_of = None
            if op in VIEW_OPS and inputs:
                view_of = inputs[0]
            elif op == "constant":
                view_of = inputs[0]
            nbytes = 0 if view_of is not None else _nbytes(shape, dtype)
            tensors[bname] = Tensor(bname, shape, dtype, nbytes, "activation", view_of)
            outputs = [bname]
            var_name[var] = bname
        attrs = _normalise_attrs(op, attrs, in_shapes)
        out_shapes = [tensors[t].shape for t in outputs]
        nodes.append(Node(bname, op, tuple(inputs), tuple(outputs), attrs,
                          node_flops(op, attrs, in_shapes, out_shapes), (bname,)))

    returned = tensor_of(func.body.body)
    graph_outputs = tuple(dict.fromkeys(returned))
    for t in graph_outputs:
        if tensors[t].kind == "activation":
            tensors[t] = Tensor(t, tensors[t].shape, tensors[t].dtype, tensors[t].nbytes, "output", tensors[t].view_of)
    return OpGraph(tuple(nodes), tensors, graph_inputs, graph_outputs, name=name)
