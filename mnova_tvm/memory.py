"""The activation-memory model: one definition of the peak, used by every stage.

DESIGN.md "Memory semantics": weights are not counted. A graph input is live from the start until
its last consumer has run. When node v runs its outputs are allocated, and the memory at that
step is every live tensor plus v's outputs. After v runs, each tensor whose consumers have all run
is freed, except graph outputs, which stay to the end. A view has 0 bytes and keeps its base alive.
"""

from __future__ import annotations

from typing import Sequence

from .errors import MnovaError
from .graph import OpGraph


def _storage_lifetimes(graph: OpGraph, position: dict[str, int]) -> dict[str, int]:
    """Base tensor -> position of the last node that reads it or any view of it.

    Graph outputs (and the bases of views that are graph outputs) live to the end; a tensor that
    nothing reads dies at the step that made it.
    """
    end = len(position)
    last_use: dict[str, int] = {}
    for tensor in graph.tensors.values():
        if tensor.kind == "weight":
            continue
        base = graph.base_of(tensor.name)
        if graph.tensors[base].kind == "weight":
            continue
        producer = graph.producer.get(tensor.name)
        last = position[producer] if producer is not None else -1
        for consumer in graph.consumers[tensor.name]:
            last = max(last, position[consumer])
        if tensor.name in graph.graph_outputs:
            last = end
        last_use[base] = max(last_use.get(base, -1), last)
    return last_use


def memory_profile(graph: OpGraph, order: Sequence[str]) -> list[int]:
    """Bytes in use at each step of `order` (step i = while order[i] runs)."""
    why = graph.topological_violation(order)
    if why is not None:
        raise MnovaError(f"invalid operator order: {why}")
    position = {name: i for i, name in enumerate(order)}
    last_use = _storage_lifetimes(graph, position)
    frees_after: dict[int, list[str]] = {}
    for base, last in last_use.items():
        frees_after.setdefault(last, []).append(base)

    def nbytes(t: str) -> int:
        return graph.tensors[t].nbytes

    live = sum(
        nbytes(t) for t in graph.graph_inputs
        if graph.tensors[t].kind != "weight" and last_use.get(t, -1) >= 0
    )
    profile = []
    for i, name in enumerate(order):
        node = graph.node_by_name[name]
        allocated = sum(nbytes(t) for t in node.outputs if graph.tensors[t].view_of is None)
        live += allocated
        profile.append(live)
        live -= sum(nbytes(b) for b in frees_after.get(i, ()))
    return profile


def activation_peak(graph: OpGraph, order: Sequence[str] | None = None) -> int:
    """Peak activation bytes of `order` (default: the import order)."""
    profile = memory_profile(graph, graph.import_order if order is None else order)
    return max(profile, default=0)
