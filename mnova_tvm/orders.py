"""Baseline operator orders to compare BTSearch with: import, random, greedy, brute force."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .errors import MnovaError
from .graph import OpGraph
from .memory import activation_peak


def import_order(graph: OpGraph) -> tuple[str, ...]:
    return graph.import_order


def _ready_scheduler(graph: OpGraph, choose) -> tuple[str, ...]:
    """List scheduling: repeatedly run one ready node picked by `choose(ready, state)`."""
    index = {n.name: i for i, n in enumerate(graph.nodes)}
    waiting = {n.name: len(graph.predecessors[n.name]) for n in graph.nodes}
    ready = [n.name for n in graph.nodes if waiting[n.name] == 0]
    order = []
    while ready:
        name = choose(ready)
        ready.remove(name)
        order.append(name)
        for s in graph.successors[name]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
        ready.sort(key=index.__getitem__)
    return tuple(order)


def random_topological_orders(graph: OpGraph, count: int, seed: int = 0) -> list[tuple[str, ...]]:
    """`count` random topological orders (each step picks a ready node uniformly), seeded."""
    rng = np.random.default_rng(seed)
    return [_ready_scheduler(graph, lambda ready: ready[int(rng.integers(len(ready)))]) for _ in range(count)]


def random_order_peaks(graph: OpGraph, count: int = 100, seed: int = 0) -> tuple[float, int]:
    """(mean, best) activation peak over `count` random topological orders: the paper's baseline."""
    peaks = [activation_peak(graph, order) for order in random_topological_orders(graph, count, seed)]
    return float(np.mean(peaks)), int(min(peaks))


def greedy_memory_order(graph: OpGraph) -> tuple[str, ...]:
    """Memory-aware list scheduling in the spirit of PyTorch inductor's reorder_for_peak_memory.

    Among the ready nodes, run the one whose execution changes live memory the least
    (bytes it allocates minus bytes it lets go), breaking ties by import order.
    """
    remaining_users: dict[str, int] = {}
    for tensor in graph.tensors.values():
        if tensor.kind == "weight":
            continue
        base = graph.base_of(tensor.name)
        remaining_users[base] = remaining_users.get(base, 0) + len(graph.consumers[tensor.name])
    pinned = {graph.base_of(t) for t in graph.graph_outputs}

    def delta(name: str) -> int:
        node = graph.node_by_name[name]
        allocated = sum(graph.tensors[t].nbytes for t in node.outputs if graph.tensors[t].view_of is None)
        reads: dict[str, int] = {}
        for t in dict.fromkeys(node.inputs):
            if graph.tensors[graph.base_of(t)].kind != "weight":
                base = graph.base_of(t)
                reads[base] = reads.get(base, 0) + 1
        freed = sum(graph.tensors[b].nbytes for b, k in reads.items() if remaining_users[b] == k and b not in pinned)
        return allocated - freed

    def choose(ready):
        name = min(ready, key=delta)
        for t in dict.fromkeys(graph.node_by_name[name].inputs):
            base = graph.base_of(t)
            if base in remaining_users:
                remaining_users[base] -= 1
        return name

    return _ready_scheduler(graph, choose)


def all_topological_orders(graph: OpGraph) -> Iterator[tuple[str, ...]]:
    names = list(graph.import_order)
    preds = {n: set(graph.predecessors[n]) for n in names}

    def extend(prefix, done):
        if len(prefix) == len(names):
            yield tuple(prefix)
            return
        for n in names:
            if n not in done and preds[n] <= done:
                prefix.append(n)
                done.add(n)
                yield from extend(prefix, done)
                prefix.pop()
                done.discard(n)

    yield from extend([], set())


def brute_force_order(graph: OpGraph, max_nodes: int = 12) -> tuple[tuple[str, ...], int]:
    """The minimum-peak order by enumerating every topological order (small graphs only)."""
    if len(graph.nodes) > max_nodes:
        raise MnovaError(f"brute force is for graphs of at most {max_nodes} nodes, this one has {len(graph.nodes)}")
    best = min(all_topological_orders(graph), key=lambda order: activation_peak(graph, order), default=())
    return best, activation_peak(graph, best) if best else 0

