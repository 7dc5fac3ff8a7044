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

# Offsets in an arena (transform.ArenaPlanMemory) are multiples of this many bytes.
ARENA_ALIGNMENT = 64


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


# --- the storage TVM really plans (TVM at the edge) ---


_MEMORY_PLAN_STEP = 7  # index of the memory-planning pass in lowering_passes()


def lowering_passes(memory_planner=None) -> list:
    """tvm.compile's default CPU Relax pipeline, with the memory-planning pass replaceable.

    `memory_planner` None keeps TVM's StaticPlanBlockMemory; another pass takes its place.
    """
    from tvm.relax import backend, transform

    return [
        backend.DispatchSampling(),
        backend.DispatchSortScan(),
        transform.LegalizeOps(),
        transform.RewriteDataflowReshape(),
        transform.ToNonDataflow(),
        transform.RemovePurityChecking(),
        transform.CallTIRRewrite(),
        memory_planner if memory_planner is not None else transform.StaticPlanBlockMemory(),
        transform.RewriteCUDAGraph(),
        transform.LowerAllocTensor(),
        transform.KillAfterLastUse(),
        transform.LowerRuntimeBuiltin(),
        transform.ComputePrimValue(),
        transform.VMShapeLower(),
        transform.AttachGlobalSymbol(),
    ]


def lower_until_memory_plan(mod, target="llvm", memory_planner=None):
    """The module as lowered by tvm.compile up to and including memory planning."""
    import tvm

    prefix = lowering_passes(memory_planner)[:_MEMORY_PLAN_STEP + 1]
    with tvm.target.Target(target) if isinstance(target, (str, dict)) else target:
        return tvm.transform.Sequential(prefix)(mod)


def storage_allocations(func) -> list[int]:
    """Sizes of the relax.memory.alloc_storage calls in a lowered Relax function."""
    from tvm import relax

    sizes = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.memory.alloc_storage":
            sizes.append(int(expr.args[0].values[0]))

    relax.analysis.post_order_visit(func.body, visit)
    return sizes


def planned_storage_bytes(lowered_mod) -> int:
    """Sum of the relax.memory.alloc_storage sizes in main (the function's result is allocated apart)."""
    return sum(storage_allocations(lowered_mod["main"]))


def tvm_planned_bytes(mod, target="llvm", memory_planner=None) -> int:
    """Storage TVM plans for `mod`'s current binding order (StaticPlanBlockMemory unless replaced)."""
    return planned_storage_bytes(lower_until_memory_plan(mod, target, memory_planner))


def place_in_arena(sizes: dict, life: dict) -> tuple[dict, int]:
    """(offset of each tensor, arena bytes): greedy by size, each tensor at the lowest aligned
    offset free during its whole lifetime (`life[t]` = first and last step, both inclusive)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets = {}
    for var in sorted(sizes, key=lambda v: (-sizes[v], life[v][0])):
        first, last = life[var]
        size = sizes[var]
        clashes = sorted((o, e) for o, e, f, l in placed if f <= last and first <= l)
        offset = 0
        for o, e in clashes:
            if offset + size <= o:
                break
            offset = max(offset, -(-e // ARENA_ALIGNMENT) * ARENA_ALIGNMENT)
        offsets[var] = offset
        placed.append((offset, offset + size, first, last))
    return offsets, max((e for _, e, _, _ in placed), default=0)
