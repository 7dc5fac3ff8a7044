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
