"""Plans for a cluster: the simple baselines every partitioner is compared with.

All return a `Plan` over the cluster's devices in the given execution order. The planners that
need latencies (GenEFlow, per-operator greedy, random search) score plans with a
`PlanEvaluator`: the cost model's plan-level estimate and the memory-budget violation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import MnovaError
from .geneflow import DIM_NAMES
from .graph import OpGraph
from .partition import (Plan, allowed_dims, footprints, partition_op, segment_groups, segment_memory, segments, single_device_plan,
                        uniform_plan)
from .targets import Cluster


def device_speeds(cluster: Cluster) -> list[float]:
    """Relative compute speed of each device: its board's speed times its CPU quota."""
    return [d.board.relative_speed * (d.cpu_quota or 1.0) for d in cluster.devices]


def single_device(graph: OpGraph, cluster: Cluster, device: str, order: Sequence[str] | None = None) -> Plan:
    names = [d.name for d in cluster.devices]
    if device not in names:
        raise MnovaError(f"cluster {cluster.name} has no device {device!r}; devices: {', '.join(names)}")
    return single_device_plan(graph, names, names.index(device), order)


def proportional(graph: OpGraph, cluster: Cluster, dim: str, order: Sequence[str] | None = None,
                 proportions: Sequence[float] | None = None) -> Plan:
    """Every operator that allows `dim` split in proportion to device speed (DeepThings/CoEdge
    style for height); the others run on the fastest device."""
    speeds = list(proportions) if proportions is not None else device_speeds(cluster)
    if len(speeds) != len(cluster.devices) or min(speeds) < 0 or sum(speeds) <= 0:
        raise MnovaError(f"proportions must be {len(cluster.devices)} non-negative numbers, not all zero")
    fastest = max(range(len(speeds)), key=speeds.__getitem__)
    return uniform_plan(graph, [d.name for d in cluster.devices], dim, speeds, order, fastest)


# --- planning with the cost model: GenEFlow and the baselines it is compared with ---


@dataclass(frozen=True)
class PlanScore:
    latency_s: float
    violation_bytes: int
    memory_bytes: tuple[int, ...]

    @property
    def feasible(self) -> bool:
        return self.violation_bytes <= 0


class PlanEvaluator:
    """Predicted latency and memory-budget violation of plans over one cluster and order."""

    def __init__(self, graph: OpGraph, cluster: Cluster, order: Sequence[str], model, coordinator_latency_s=None):
        from .profile import device_kind

        self.graph, self.cluster, self.model = graph, cluster, model
        self.order = tuple(order)
        self.devices = [d.name for d in cluster.devices]
        self.kinds = [device_kind(d) for d in cluster.devices]
        self.budgets = np.array([d.memory_budget_bytes for d in cluster.devices])
        self.latency = list(coordinator_latency_s) if coordinator_latency_s is not None else \
            [d.link.latency_ms / 1e3 for d in cluster.devices]
        self.allowed = np.array([[dim in allowed_dims(graph, graph.node_by_name[n]) for dim in DIM_NAMES]
                                 for n in self.order])
        self.cache: dict = {}  # predictions by feature row
        self.segment_cache: dict = {}  # (operators, dim, shares) -> (seconds, weight bytes, peak bytes)
        self.evaluations = 0

    def plan_from(self, dims: np.ndarray, shares: np.ndarray) -> Plan:
        ops = {name: partition_op(self.graph, name, DIM_NAMES[int(dim)], share)
               for name, dim, share in zip(self.order, dims, shares)}
        return Plan(tuple(self.devices), self.order, ops)

    def genes_of(self, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
        dims = np.array([DIM_NAMES.index(plan.ops[n].dim) for n in self.order], dtype=np.int8)
        shares = np.array([np.asarray(plan.ops[n].shares, float) / max(sum(plan.ops[n].shares), 1) for n in self.order])
        return dims, shares

    def canonical(self, dims: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Genes snapped to the plans they decode to."""
        pairs = [self.genes_of(self.plan_from(d, s)) for d, s in zip(dims, shares)]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def score(self, plan: Plan) -> PlanScore:
        """The plan's predicted latency and memory, from per-segment results cached by segment
        (operators, dimension, proportions): plans in a population share most of their segments."""
        from .costmodel import segment_seconds

        self.evaluations += 1
        groups = segment_groups(self.graph, plan)
        keys = [(group, plan.ops[group[0]].dim, plan.ops[group[0]].shares) for group in groups]
        first_seen: dict = {}
        for i, key in enumerate(keys):
            if key not in self.segment_cache:
                first_seen.setdefault(key, i)
        if first_seen:
            segs = segments(self.graph, plan, groups, list(first_seen.values()))
            compute, wire = segment_seconds(self.model, self.graph, segs, self.devices, self.kinds, self.latency,
                                            self.cache)
            for s, (seg, key) in enumerate(zip(segs, first_seen)):
                memory = np.array([dataclasses.astuple(segment_memory(self.graph, seg, d))
                                   for d in range(len(self.devices))], dtype=np.int64)
                self.segment_cache[key] = ((compute[s] + wire[s]).max(), memory)
        cached = [self.segment_cache[key] for key in keys]
        seconds = sum(c[0] for c in cached)
        memory = footprints(np.stack([c[1] for c in cached]))
        violation = int(np.clip(memory - self.budgets, 0, None).sum())
        return PlanScore(float(seconds), violation, tuple(int(m) for m in memory))

    def evaluate_population(self, dims: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = [self.score(self.plan_from(d, s)) for d, s in zip(dims, shares)]
        return np.array([s.latency_s for s in scores]), np.array([s.violation_bytes for s in scores], dtype=float)


@dataclass(frozen=True)
class PlannerResult:
    name: str
    plan: Plan
    score: PlanScore
    seconds: float
    evaluations: int
    history: tuple = ()


def baseline_plans(graph: OpGraph, cluster: Cluster, order: Sequence[str]) -> dict[str, Plan]:
    """Plans needing no search: each single device, and every layer by height / by channel in
    proportion to device speed."""
    plans = {f"single:{d.name}": single_device(graph, cluster, d.name, order) for d in cluster.devices}
    plans["height (by speed)"] = proportional(graph, cluster, "height", order)
    plans["channel (by speed)"] = proportional(graph, cluster, "channel", order)
    return plans


def greedy_per_operator(evaluator: PlanEvaluator) -> Plan:
    """Each operator on its own: the dimension and speed-proportional split (or single device)
    with the lowest predicted compute, ignoring what its neighbours do (the paper's criticism)."""
    from .costmodel import segment_features
    from .partition import op_segment

    graph, n = evaluator.graph, len(evaluator.devices)
    speeds = device_speeds(evaluator.cluster)
    ops = {}
    for name in evaluator.order:
        candidates = [partition_op(graph, name, "none", np.eye(n)[d]) for d in range(n)]
        for dim in allowed_dims(graph, graph.node_by_name[name])[1:]:
            candidates.append(partition_op(graph, name, dim, speeds))
        best, best_s = None, float("inf")
        for part in candidates:
            seg = op_segment(graph, name, part, evaluator.devices)
            seconds = 0.0
            for d in range(n):
                if seg.active(d):
                    rows = segment_features(graph, seg, d)
                    compute = float(evaluator.model.predict(np.array(rows), [evaluator.kinds[d]] * len(rows)).sum())
                    seconds = max(seconds, compute)
            if seconds < best_s:
                best, best_s = part, seconds
        ops[name] = best
    return Plan(tuple(evaluator.devices), evaluator.order, ops)


def random_search(evaluator: PlanEvaluator, evaluations: int, seed: int = 0) -> Plan:
    """The best of `evaluations` random chromosomes under Deb's rules."""
    from .geneflow import PartitionProblem, random_population, rank

    problem = PartitionProblem(evaluator.allowed, len(evaluator.devices), evaluator.evaluate_population)
    dims, shares = random_population(problem, evaluations, np.random.default_rng(seed))
    latency, violation = evaluator.evaluate_population(dims, shares)
    best = rank(latency, violation)[0]
    return evaluator.plan_from(dims[best], shares[best])


def best_pipeline(evaluator: PlanEvaluator) -> tuple[np.ndarray, np.ndarray]:
    """Genes of the best two-stage pipeline of the two fastest devices, in either order, cut
    after every operator in turn (under Deb's rules). On resnet50 the GA settled on the slower
    order (mid first) and no single-run move reaches the faster one, which random search drew."""
    from .geneflow import DIM_NONE, rank

    n, speeds = len(evaluator.order), device_speeds(evaluator.cluster)
    fastest = sorted(range(len(speeds)), key=lambda d: -speeds[d])[:2]
    if n < 2 or len(fastest) < 2:
        return evaluator.genes_of(single_device(evaluator.graph, evaluator.cluster, evaluator.devices[fastest[0]],
                                                evaluator.order))
    eye = np.eye(len(speeds))
    shares = np.array([[eye[first] if i < cut else eye[second] for i in range(n)]
                       for first, second in (fastest, fastest[::-1]) for cut in range(1, n)])
    dims = np.full(shares.shape[:2], DIM_NONE, dtype=np.int8)
    best = rank(*evaluator.evaluate_population(dims, shares))[0]
    return dims[best], shares[best]


def geneflow_plan(evaluator: PlanEvaluator, config=None, progress=None) -> tuple[Plan, object]:
    """GenEFlow seeded with the baselines, per-operator greedy and the best two-device pipeline
    (so it is never worse than the best of them)."""
    from .geneflow import GAConfig, PartitionProblem, run_geneflow

    plans = [*baseline_plans(evaluator.graph, evaluator.cluster, evaluator.order).values(), greedy_per_operator(evaluator)]
    seeds = (*(evaluator.genes_of(p) for p in plans), best_pipeline(evaluator))
    problem = PartitionProblem(evaluator.allowed, len(evaluator.devices), evaluator.evaluate_population, seeds,
                               evaluator.canonical)
    result = run_geneflow(problem, config or GAConfig(), progress)
    return evaluator.plan_from(result.dims, result.shares), result


def infeasible_error(evaluator: PlanEvaluator, plan: Plan, score: PlanScore) -> MnovaError:
    """No plan met the budgets: name, per device, the memory the least-violating plan needs."""
    needs = ", ".join(f"{name} {m / 2**20:.1f} MiB (budget {b / 2**20:.1f})"
                      for name, m, b in zip(evaluator.devices, score.memory_bytes, evaluator.budgets))
    return MnovaError(f"no plan meets the memory budgets; the closest plan found needs {needs}: raise those "
                      f"budgets to at least that, or add devices")


STRATEGIES = ("geneflow", "greedy", "random", "height", "channel", "single")


def plan_with(strategy: str, evaluator: PlanEvaluator, config=None, progress=None,
              random_evaluations: int | None = None) -> PlannerResult:
    """Run one planner; `strategy` is one of STRATEGIES (single may name a device: single:NAME)."""
    import time

    kind, _, device = strategy.partition(":")
    if kind not in STRATEGIES:
        raise MnovaError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    graph, cluster, order = evaluator.graph, evaluator.cluster, evaluator.order
    start, before = time.perf_counter(), evaluator.evaluations
    history = ()
    if kind == "geneflow":
        plan, result = geneflow_plan(evaluator, config, progress)
        history = result.history
    elif kind == "greedy":
        plan = greedy_per_operator(evaluator)
    elif kind == "random":
        plan = random_search(evaluator, random_evaluations or 1000)
    elif kind in ("height", "channel"):
        plan = proportional(graph, cluster, kind, order)
    elif device:
        plan = single_device(graph, cluster, device, order)
    else:  # the fastest single device whose budget the plan meets, else the fastest
        scored = [(evaluator.score(single_device(graph, cluster, d.name, order)), d.name) for d in cluster.devices]
        feasible = [(s.latency_s, name) for s, name in scored if s.feasible]
        name = min(feasible)[1] if feasible else min((s.latency_s, name) for s, name in scored)[1]
        plan = single_device(graph, cluster, name, order)
        strategy = f"single:{name}"
    seconds = time.perf_counter() - start
    score = evaluator.score(plan)
    return PlannerResult(strategy, plan, score, seconds, evaluator.evaluations - before, history)


def compare_planners(evaluator: PlanEvaluator, config=None, progress=None) -> list[PlannerResult]:
    """GenEFlow and every baseline under the same cost model; random search gets as many
    evaluations as GenEFlow used."""
    ga = plan_with("geneflow", evaluator, config, progress)
    results = [ga]
    for strategy in ("single", "height", "channel", "greedy"):
        results.append(plan_with(strategy, evaluator))
    results.append(plan_with("random", evaluator, random_evaluations=ga.evaluations))
    return results
