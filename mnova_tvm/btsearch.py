"""BTSearch: the operator order with the smallest activation peak, proved optimal.

Backtracking over topological orders, made tractable by four facts:
- State pruning: the live bytes after a set of executed nodes depend only on the set, so a set
  already reached with a peak no higher is not explored again (memo keyed by a bitmask).
- Bound pruning: a partial order whose peak already reaches the best complete order is cut.
- Cut nodes: a node comparable with every other node (each is its ancestor or descendant) is
  reached in the same state by every order. The search splits there into independent segments,
  and the memory at that step is order-independent, which gives a tight lower bound.
- Pinning: a node that reads no live tensor (a weight reshape or transpose) only adds memory,
  so it runs just before its first consumer (DESIGN.md); it is never a choice of its own.
A segment whose best peak is at or below the global lower bound cannot lower the overall peak,
so its search stops there.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from .errors import MnovaError
from .graph import OpGraph
from .memory import activation_peak
from .orders import greedy_memory_order


@dataclass(frozen=True)
class SearchResult:
    order: tuple[str, ...]
    peak_bytes: int
    optimal: bool
    lower_bound_bytes: int
    search_seconds: float
    states_explored: int

    @property
    def gap_bytes(self) -> int:
        return self.peak_bytes - self.lower_bound_bytes


class _Budget(Exception):
    """Raised inside the search when the time budget runs out."""


class _Problem:
    """The graph as integer-indexed arrays and bitmasks, with the memory rules precomputed."""

    def __init__(self, graph: OpGraph):
        self.graph = graph
        nodes = graph.nodes
        self.n = len(nodes)
        self.names = [n.name for n in nodes]
        index = {name: i for i, name in enumerate(self.names)}
        self.preds = [0] * self.n
        for i, node in enumerate(nodes):
            for p in graph.predecessors[node.name]:
                self.preds[i] |= 1 << index[p]
        # storage bases: their bytes, their users (producer + readers of it and of its views)
        bases: dict[str, int] = {}
        users: list[int] = []
        base_bytes: list[int] = []
        persistent: list[bool] = []
        outputs = {graph.base_of(t) for t in graph.graph_outputs}
        self.touches = [[] for _ in range(self.n)]
        for tensor in graph.tensors.values():
            base = graph.base_of(tensor.name)
            if graph.tensors[base].kind == "weight":
                continue
            if base not in bases:
                bases[base] = len(base_bytes)
                base_bytes.append(graph.tensors[base].nbytes)
                users.append(0)
                persistent.append(base in outputs)
            b = bases[base]
            producer = graph.producer.get(tensor.name)
            if producer is not None:
                users[b] |= 1 << index[producer]
            for c in graph.consumers[tensor.name]:
                users[b] |= 1 << index[c]
        for b, mask in enumerate(users):
            for i in _bits(mask):
                self.touches[i].append(b)
        self.users, self.base_bytes, self.persistent = users, base_bytes, persistent
        self.alloc = [sum(graph.tensors[t].nbytes for t in node.outputs if graph.tensors[t].view_of is None)
                      for node in nodes]
        # graph inputs (and bases nobody produces) are live from the start while they have readers
        self.initial_live = sum(
            base_bytes[b] for base, b in bases.items() if graph.producer.get(base) is None and users[b]
        )
        # pinned nodes: read no live tensor and have at least one consumer
        self.pinned = [False] * self.n
        succs = [0] * self.n
        for i in range(self.n):
            for j in _bits(self.preds[i]):
                succs[j] |= 1 << i
        self.succs = succs
        for i, node in enumerate(nodes):
            reads_live = any(graph.tensors[graph.base_of(t)].kind != "weight" for t in node.inputs)
            self.pinned[i] = not reads_live and succs[i] != 0

    def pinned_chain(self, i: int, done: int) -> list[int]:
        """The not-yet-run pinned ancestors of node i, in a valid order (they run right before i)."""
        chain: list[int] = []
        seen = done

        def visit(j):
            nonlocal seen
            for p in _bits(self.preds[j] & ~seen):
                if self.pinned[p]:
                    visit(p)
            if not seen >> j & 1:
                seen |= 1 << j
                chain.append(j)

        for p in _bits(self.preds[i] & ~done):
            visit(p)
        return chain

    def step(self, i: int, done: int, live: int) -> tuple[int, int, int]:
        """Run node i: (memory during the step, live bytes after, new done mask)."""
        during = live + self.alloc[i]
        done |= 1 << i
        freed = 0
        for b in self.touches[i]:
            if not self.persistent[b] and self.users[b] & ~done == 0:
                freed += self.base_bytes[b]
        return during, during - freed, done

    def run(self, sequence, done: int, live: int, peak: int) -> tuple[int, int, int]:
        for i in sequence:
            during, live, done = self.step(i, done, live)
            peak = max(peak, during)
        return done, live, peak


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def lower_bound(graph: OpGraph) -> int:
    """A peak no order can beat: max over cut steps (order-independent) and over nodes of in + out."""
    return _lower_bound(_Problem(graph), _cut_nodes(_Problem(graph)) if graph.nodes else [])


def _lower_bound(problem: _Problem, cuts: list[int]) -> int:
    graph = problem.graph
    bound = 0
    for node in graph.nodes:
        bases = {graph.base_of(t) for t in node.inputs}
        live_in = sum(graph.tensors[b].nbytes for b in bases if graph.tensors[b].kind != "weight")
        alloc = sum(graph.tensors[t].nbytes for t in node.outputs if graph.tensors[t].view_of is None)
        bound = max(bound, live_in + alloc)
    done, live = 0, problem.initial_live
    for cut in cuts:  # the state before a cut node is forced: all its ancestors have run
        before = _ancestors(problem, cut) & ~done
        done, live, _ = problem.run(_topological(problem, before), done, live, 0)
        during, live, done = problem.step(cut, done, live)
        bound = max(bound, during)
    return bound


def _ancestors(problem: _Problem, i: int) -> int:
    mask, frontier = 0, problem.preds[i]
    while frontier:
        mask |= frontier
        nxt = 0
        for j in _bits(frontier):
            nxt |= problem.preds[j]
        frontier = nxt & ~mask
    return mask


def _topological(problem: _Problem, subset: int) -> list[int]:
    """Nodes of `subset` in import order (import order is topological)."""
    return [i for i in range(problem.n) if subset >> i & 1]


def _cut_nodes(problem: _Problem) -> list[int]:
    """Non-pinned nodes comparable with every non-pinned node, in topological order."""
    n = problem.n
    anc = [0] * n
    for i in range(n):  # import order is topological
        for p in _bits(problem.preds[i]):
            anc[i] |= anc[p] | (1 << p)
    desc = [0] * n
    for i in reversed(range(n)):
        for s in _bits(problem.succs[i]):
            desc[i] |= desc[s] | (1 << s)
    free = sum(1 << i for i in range(n) if not problem.pinned[i])
    return [i for i in range(n) if not problem.pinned[i] and (anc[i] | desc[i] | (1 << i)) & free == free]


def _segments(problem: _Problem, cuts: list[int]) -> list[int]:
    """Masks of the nodes each segment must run: the ancestors of each cut node not run before."""
    segments, done = [], 0
    for cut in cuts:
        mask = (_ancestors(problem, cut) | (1 << cut)) & ~done
        segments.append(mask)
        done |= mask
    rest = ((1 << problem.n) - 1) & ~done
    if rest:
        segments.append(rest)
    return segments


def btsearch(graph: OpGraph, time_budget: float | None = None) -> SearchResult:
    """The order of `graph`'s nodes with the smallest activation peak (DESIGN.md semantics).

    With `time_budget` (seconds) the search is anytime: it returns the best order found so far,
    `optimal=False` unless it finished, and the gap to the lower bound.
    """
    if time_budget is not None and time_budget <= 0:
        raise MnovaError(f"time budget must be positive, got {time_budget}")
    started = time.perf_counter()
    deadline = None if time_budget is None else started + time_budget
    if not graph.nodes:
        return SearchResult((), 0, True, 0, 0.0, 0)
    problem = _Problem(graph)
    cuts = _cut_nodes(problem)
    bound = _lower_bound(problem, cuts)
    greedy = [graph.import_order, greedy_memory_order(graph)]
    incumbent = min(greedy, key=lambda order: activation_peak(graph, order))
    position = {name: k for k, name in enumerate(incumbent)}

    order: list[int] = []
    done, live, peak, proved, states = 0, problem.initial_live, 0, True, 0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * problem.n + 1000))
    try:
        for segment in _segments(problem, cuts):
            # incumbent for this segment: the incumbent order restricted to it
            seed = sorted((i for i in _bits(segment)), key=lambda i: position[problem.names[i]])
            result = _search_segment(problem, segment, seed, done, live, max(bound, peak), deadline)
            seg_order, seg_peak, finished, explored = result
            states += explored
            proved &= finished
            done, live, peak = problem.run(seg_order, done, live, peak)
            order.extend(seg_order)
    finally:
        sys.setrecursionlimit(limit)
    names = tuple(problem.names[i] for i in order)
    final_peak = activation_peak(graph, names)
    assert final_peak == peak, "search and memory model disagree"
    return SearchResult(names, final_peak, proved or final_peak <= bound, bound,
                        time.perf_counter() - started, states)


def _search_segment(problem: _Problem, segment: int, seed: list[int], done0: int, live0: int,
                    good_enough: int, deadline: float | None):
    """Best order of the nodes in `segment`, starting from the state (done0, live0).

    Returns (order, peak, finished, states). Stops early once the peak is <= good_enough (a
    lower bound of the whole graph's peak, so this segment cannot matter beyond it).
    """
    choosable = [i for i in _bits(segment) if not problem.pinned[i]]
    # pinned nodes with no consumer in the segment run at its end (they only add memory)
    best_order = _expand(problem, seed, done0)
    _, _, best_peak = problem.run(best_order, done0, live0, 0)
    if best_peak <= good_enough:
        return best_order, best_peak, True, 0
    full = done0 | segment
    memo: dict[int, int] = {}
    path: list[int] = []
    states = 0

    def dfs(done: int, live: int, peak: int) -> bool:
        """Explore from this state; True once the segment is solved to good_enough."""
        nonlocal best_peak, best_order, states
        if done == full:
            if peak < best_peak:
                best_peak, best_order = peak, list(path)
            return best_peak <= good_enough
        states += 1
        if deadline is not None and states % 4096 == 0 and time.perf_counter() > deadline:
            raise _Budget
        ready = [i for i in choosable if not done >> i & 1 and problem.preds[i] & ~(done | _pinned_mask) == 0]
        moves = []
        for i in ready:
            chain = problem.pinned_chain(i, done) + [i]
            new_done, new_live, new_peak = problem.run(chain, done, live, peak)
            if new_peak >= best_peak:
                continue
            moves.append((new_live, new_peak, chain, new_done))
        moves.sort(key=lambda m: (m[1], m[0]))
        for new_live, new_peak, chain, new_done in moves:
            if new_peak >= best_peak:
                continue
            if memo.get(new_done, best_peak + 1) <= new_peak:
                continue
            memo[new_done] = new_peak
            path.extend(chain)
            solved = dfs(new_done, new_live, new_peak)
            del path[len(path) - len(chain):]
            if solved:
                return True
        return False

    _pinned_mask = sum(1 << i for i in range(problem.n) if problem.pinned[i])
    leftovers = [i for i in _bits(segment) if problem.pinned[i]]
    if not choosable:
        return best_order, best_peak, True, 0
    try:
        dfs(done0, live0, 0)
        finished = True
    except _Budget:
        finished = False
    # pinned nodes not pulled in by any chain (their consumers were outside the segment)
    missing = [i for i in leftovers if i not in set(best_order)]
    return best_order + missing, best_peak, finished, states


def _expand(problem: _Problem, seed: list[int], done0: int) -> list[int]:
    """A segment order with pinned nodes moved to just before their first consumer."""
    order, done = [], done0
    members = set(seed)
    for i in seed:
        if problem.pinned[i]:
            continue
        for j in problem.pinned_chain(i, done) + [i]:
            order.append(j)
            done |= 1 << j
    order.extend(i for i in seed if i in members and not done >> i & 1)
    return order
