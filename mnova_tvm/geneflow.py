"""GenEFlow: a genetic algorithm that splits operators across devices under memory budgets.

The chromosome holds, for each operator in execution order, a dimension gene (0 none, 1 height,
2 channel) and a proportion vector over the devices. The GA itself only sees arrays: a
`PartitionProblem` says which dimensions each operator allows and evaluates a whole population at
once (latency and constraint violation), so it can be tested on synthetic problems and fed by
the cost model without knowing about TVM.

Selection follows Deb's feasibility rules (feasible beats infeasible; between feasible, lower
latency; between infeasible, lower violation), with elitism. Two-point crossover keeps runs of
consecutive operators together, which is what lets the partitioner form segments; a run-level
mutation moves a run's boundary or hands the run to one device; when the best stops improving
for a few generations, all but the elite are drawn anew (the population has converged on a
local optimum, which on long chains random search with as many evaluations would otherwise beat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import MnovaError

DIM_NONE, DIM_HEIGHT, DIM_CHANNEL = 0, 1, 2
DIM_NAMES = ("none", "height", "channel")

# evaluate(dims (P, n) int8, shares (P, n, D) float) -> (latency_s (P,), violation_bytes (P,))
Evaluate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PartitionProblem:
    allowed_dims: np.ndarray  # (n_ops, 3) bool; column 0 (none) must be True everywhere
    n_devices: int
    evaluate: Evaluate
    seeds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()  # chromosomes put in generation 0
    # canonical(dims, shares) -> (dims, shares): the genes snapped to what they decode to (whole
    # rows/channels, one owner for none), so equal plans have equal genes (Lamarckian repair)
    canonical: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def n_ops(self) -> int:
        return self.allowed_dims.shape[0]


@dataclass(frozen=True)
class GAConfig:
    population: int = 48
    generations: int = 60
    crossover_rate: float = 0.9
    dim_mutation_rate: float | None = None  # per gene; default 1 / n_ops
    share_mutation_rate: float | None = None  # per gene; default 2 / n_ops
    share_sigma: float = 0.15
    elite: int = 2
    tournament: int = 4  # strong selection: on long chains convergence, not diversity, is short
    seed: int = 0
    patience: int | None = None  # stop after this many generations without improvement
    oversample: int = 4  # generation 0 draws this many times the population and keeps the best
    polish: bool = True  # merge neighbouring runs of the best chromosome while that helps
    restart: int | None = 5  # after this many generations without improvement, redraw all but the elite
    run_mutation_rate: float = 0.5  # chance that a child also has one run changed as a whole

    def validate(self) -> None:
        if self.population < 4 or self.generations < 1:
            raise MnovaError("GenEFlow needs a population of at least 4 and at least 1 generation")
        if not 0 <= self.elite < self.population:
            raise MnovaError("GenEFlow elite count must be between 0 and population - 1")


@dataclass(frozen=True)
class GenerationStats:
    generation: int
    best_latency: float  # best feasible latency so far (inf while none is feasible)
    best_violation: float  # violation of the best individual so far (0 once feasible)
    mean_latency: float
    feasible_fraction: float
    evaluations: int


@dataclass(frozen=True)
class GAResult:
    dims: np.ndarray  # (n_ops,)
    shares: np.ndarray  # (n_ops, D), rows sum to 1
    latency: float
    violation: float
    history: tuple[GenerationStats, ...] = field(default_factory=tuple)
    evaluations: int = 0

    @property
    def feasible(self) -> bool:
        return self.violation <= 0


def better(lat_a, vio_a, lat_b, vio_b) -> np.ndarray:
    """Deb's rules, elementwise: is a strictly better than b?"""
    lat_a, vio_a, lat_b, vio_b = map(np.asarray, (lat_a, vio_a, lat_b, vio_b))
    feas_a, feas_b = vio_a <= 0, vio_b <= 0
    return np.where(
        feas_a & feas_b, lat_a < lat_b,
        np.where(feas_a != feas_b, feas_a, vio_a < vio_b),
    )


def rank(latency: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices sorted best first under Deb's rules (feasible by latency, then infeasible by violation)."""
    feasible = violation <= 0
    key_primary = np.where(feasible, 0, 1)
    key_secondary = np.where(feasible, latency, violation)
    return np.lexsort((key_secondary, key_primary))


def _normalise(shares: np.ndarray) -> np.ndarray:
    shares = np.clip(shares, 0.0, None)
    total = shares.sum(axis=-1, keepdims=True)
    uniform = np.full_like(shares, 1.0 / shares.shape[-1])
    return np.where(total > 0, shares / np.where(total > 0, total, 1), uniform)


def _repair(dims: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Replace dims an operator does not allow by an allowed one (none is always allowed)."""
    ops = np.arange(dims.shape[-1])
    bad = ~allowed[ops, dims]
    if bad.any():
        dims = dims.copy()
        dims[bad] = DIM_NONE
    return dims


def random_population(problem: PartitionProblem, size: int, rng: np.random.Generator):
    n, d = problem.n_ops, problem.n_devices
    # Runs of equal genes make segments: draw a few breakpoints and repeat one gene per run.
    dims = np.empty((size, n), dtype=np.int8)
    shares = np.empty((size, n, d))
    for i in range(size):
        if i % 3 == 2:  # a pipeline: a few stretches, each whole on one device
            runs = int(rng.integers(1, min(n, 2 * d) + 1))
            cuts = np.sort(rng.choice(np.arange(1, n), size=min(runs - 1, n - 1), replace=False)) if n > 1 else []
            bounds = [0, *cuts, n]
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                dims[i, lo:hi] = DIM_NONE
                shares[i, lo:hi] = np.eye(d)[int(rng.integers(0, d))]
            continue
        runs = max(1, int(rng.integers(1, max(2, n // 4) + 1)))
        cuts = np.sort(rng.choice(np.arange(1, n), size=min(runs - 1, n - 1), replace=False)) if n > 1 else []
        bounds = [0, *cuts, n]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            dims[i, lo:hi] = rng.integers(0, 3)
            shares[i, lo:hi] = rng.dirichlet(np.ones(d))
        dims[i] = _repair(dims[i], problem.allowed_dims)
    return dims, _normalise(shares)


def _crossover(a_dims, a_shares, b_dims, b_shares, rng):
    n = a_dims.shape[0]
    if n < 2:
        return a_dims.copy(), a_shares.copy()
    lo, hi = np.sort(rng.choice(np.arange(n + 1), size=2, replace=False))
    dims, shares = a_dims.copy(), a_shares.copy()
    dims[lo:hi], shares[lo:hi] = b_dims[lo:hi], b_shares[lo:hi]
    # Blend the proportions of the parents outside the swapped run: proportions are continuous,
    # and averaging moves them towards the balance point faster than mutation alone.
    blend = rng.random()
    outside = np.ones(n, dtype=bool)
    outside[lo:hi] = False
    shares[outside] = blend * a_shares[outside] + (1 - blend) * b_shares[outside]
    return dims, shares


def _mutate(dims, shares, problem, config, rng):
    n, d = shares.shape
    dim_rate = config.dim_mutation_rate if config.dim_mutation_rate is not None else 1.0 / n
    share_rate = config.share_mutation_rate if config.share_mutation_rate is not None else 2.0 / n
    dims, shares = dims.copy(), shares.copy()
    flip = rng.random(n) < dim_rate
    dims[flip] = rng.integers(0, 3, size=int(flip.sum()))
    jitter = rng.random(n) < share_rate
    if jitter.any():
        sigma = config.share_sigma * rng.choice([0.1, 0.3, 1.0])  # coarse and fine steps
        shares[jitter] += rng.normal(0.0, sigma, size=(int(jitter.sum()), d))
    # Copy a neighbour's gene: joins two runs into one segment (fewer transfers).
    if n > 1 and rng.random() < 0.3:
        i = int(rng.integers(0, n - 1))
        if rng.random() < 0.5:
            dims[i + 1], shares[i + 1] = dims[i], shares[i]
        else:
            dims[i], shares[i] = dims[i + 1], shares[i + 1]
    # Give a whole stretch one gene: a long segment, or a stretch run by one device.
    if n > 1 and rng.random() < 0.2:
        lo, hi = np.sort(rng.choice(np.arange(n + 1), size=2, replace=False))
        k = int(rng.integers(lo, hi))
        dims[lo:hi] = np.where(problem.allowed_dims[lo:hi, dims[k]], dims[k], DIM_NONE)
        shares[lo:hi] = shares[k]
    # Occasionally move a whole run to one device (memory relief for one device, speed for another).
    if rng.random() < 0.1:
        lo, hi = np.sort(rng.choice(np.arange(n + 1), size=2, replace=False))
        onehot = np.zeros(d)
        onehot[int(rng.integers(0, d))] = 1.0
        shares[lo:hi] = onehot
    if rng.random() < config.run_mutation_rate:
        dims, shares = _mutate_run(dims, shares, problem, rng)
    return _repair(dims, problem.allowed_dims), _normalise(shares)


def _mutate_run(dims, shares, problem, rng):
    """Change one run (a stretch of equal genes: roughly one segment) as a whole: move its boundary
    with a neighbour by a geometric number of operators, or give it (or its head or tail) one
    device or a fresh split. Per-gene changes rarely do this on a long chain; they break runs up."""
    d = shares.shape[1]
    runs = _runs(dims, shares)
    move = rng.random()
    if move < 0.4 and len(runs) > 1:
        b = int(rng.integers(1, len(runs)))
        (left_lo, _), (boundary, right_hi) = runs[b - 1], runs[b]
        step = int(rng.geometric(0.1))
        if rng.random() < 0.5:  # the left run grows
            hi = min(boundary + step, right_hi)
            dims[boundary:hi], shares[boundary:hi] = dims[boundary - 1], shares[boundary - 1]
        else:  # the right run grows
            lo = max(boundary - step, left_lo)
            dims[lo:boundary], shares[lo:boundary] = dims[boundary], shares[boundary]
        return dims, shares
    lo, hi = runs[int(rng.integers(len(runs)))]
    if hi - lo > 1 and rng.random() < 0.5:  # only the head or the tail of the run
        cut = int(rng.integers(lo + 1, hi))
        lo, hi = (lo, cut) if rng.random() < 0.5 else (cut, hi)
    if move < 0.7:
        dims[lo:hi] = DIM_NONE
        shares[lo:hi] = np.eye(d)[int(rng.integers(0, d))]
    else:
        dim = int(rng.integers(1, 3))
        dims[lo:hi] = np.where(problem.allowed_dims[lo:hi, dim], dim, DIM_NONE)
        shares[lo:hi] = rng.dirichlet(np.ones(d))
    return dims, shares


def _tournament(latency, violation, k, count, rng) -> np.ndarray:
    size = latency.shape[0]
    picks = rng.integers(0, size, size=(count, k))
    winners = picks[:, 0].copy()
    for j in range(1, k):
        challenger = picks[:, j]
        take = better(latency[challenger], violation[challenger], latency[winners], violation[winners])
        winners = np.where(take, challenger, winners)
    return winners


def _runs(dims: np.ndarray, shares: np.ndarray) -> list[tuple[int, int]]:
    """Maximal stretches of equal genes (the segments a plan will form, roughly)."""
    n = dims.shape[0]
    starts = [0] + [i for i in range(1, n) if dims[i] != dims[i - 1] or not np.allclose(shares[i], shares[i - 1])]
    return list(zip(starts, starts[1:] + [n]))


def polish(problem: PartitionProblem, dims: np.ndarray, shares: np.ndarray, latency: float, violation: float,
           max_passes: int = 20):
    """Local search on one chromosome, while it helps under Deb's rules: give a run (or a few
    operators at its edge) its neighbour's gene, merging segments or moving a boundary; hand a run
    to one device; or rebalance a split run's proportions (drop a device, move a tenth between two). Returns (dims, shares, latency, violation, evaluations)."""
    evaluations = 0
    for _ in range(max_passes):
        runs = _runs(dims, shares)
        if len(runs) < 2:
            break
        candidates_d, candidates_s = [], []
        for (a_lo, a_hi), (b_lo, b_hi) in zip(runs[:-1], runs[1:]):
            # merge one run into its neighbour, or move their boundary anywhere between them
            moves = [((b_lo, b_hi), a_lo), ((a_lo, a_hi), b_lo)]
            moves += [((b_lo, cut), a_lo) for cut in range(b_lo + 1, b_hi)]
            moves += [((cut, b_lo), b_lo) for cut in range(a_lo + 1, b_lo)]
            for (lo, hi), src in moves:
                d, sh = dims.copy(), shares.copy()
                d[lo:hi] = np.where(problem.allowed_dims[lo:hi, dims[src]], dims[src], DIM_NONE)
                sh[lo:hi] = shares[src]
                candidates_d.append(d)
                candidates_s.append(sh)
        for lo, hi in runs:  # hand a run to one device
            for device in range(problem.n_devices):
                if dims[lo] != DIM_NONE or shares[lo, device] < 1:
                    d, sh = dims.copy(), shares.copy()
                    d[lo:hi] = DIM_NONE
                    sh[lo:hi] = np.eye(problem.n_devices)[device]
                    candidates_d.append(d)
                    candidates_s.append(sh)
        for lo, hi in runs:  # rebalance a split run: drop a device, or move a share between two
            if dims[lo] == DIM_NONE:
                continue
            base = shares[lo]
            options = []
            for a in range(problem.n_devices):
                if base[a] > 0:
                    dropped = base.copy()
                    dropped[a] = 0
                    options.append(dropped)
                for b in range(problem.n_devices):
                    if a != b and base[a] > 0:
                        moved = base.copy()
                        step = min(base[a], 0.1)
                        moved[a] -= step
                        moved[b] += step
                        options.append(moved)
            for option in options:
                if option.sum() > 0:
                    sh = shares.copy()
                    sh[lo:hi] = option / option.sum()
                    candidates_d.append(dims.copy())
                    candidates_s.append(sh)
        c_lat, c_vio = _evaluate(problem, np.array(candidates_d), np.array(candidates_s))
        evaluations += len(candidates_d)
        top = rank(c_lat, c_vio)[0]
        if not better(c_lat[top], c_vio[top], latency, violation):
            break
        dims, shares, latency, violation = candidates_d[top], candidates_s[top], float(c_lat[top]), float(c_vio[top])
    return dims, shares, latency, violation, evaluations


def _draw(problem: PartitionProblem, count: int, keep: int, rng: np.random.Generator, seeds=()):
    """(dims, shares, latency, violation) of the best `keep` of `count` random chromosomes, the
    first of which are replaced by `seeds`."""
    dims, shares = random_population(problem, count, rng)
    for i, (seed_dims, seed_shares) in enumerate(seeds[:count]):
        dims[i] = _repair(np.asarray(seed_dims, dtype=np.int8), problem.allowed_dims)
        shares[i] = _normalise(np.asarray(seed_shares, dtype=float))
    latency, violation = _evaluate(problem, dims, shares)
    best = rank(latency, violation)[:keep]
    return dims[best], shares[best], latency[best], violation[best]


def run_geneflow(problem: PartitionProblem, config: GAConfig = GAConfig(),
                 progress: Callable[[GenerationStats], None] | None = None) -> GAResult:
    """Evolve a partition; deterministic for a given problem and config.seed."""
    config.validate()
    if problem.n_ops == 0:
        raise MnovaError("nothing to partition: the graph has no operators")
    if not problem.allowed_dims[:, DIM_NONE].all():
        raise ValueError("every operator must allow dimension none")
    rng = np.random.default_rng(config.seed)
    drawn = config.population * max(1, config.oversample)
    dims, shares, latency, violation = _draw(problem, drawn, config.population, rng, problem.seeds)
    evaluations = drawn
    history = []
    best = rank(latency, violation)[0]
    best_dims, best_shares = dims[best].copy(), shares[best].copy()
    best_lat, best_vio = float(latency[best]), float(violation[best])
    stale = since_restart = 0
    for gen in range(config.generations):
        if config.restart is not None and since_restart >= config.restart:
            # The population has converged on a local optimum: keep the elite, draw the rest anew
            # (the best of `oversample` times as many), so crossover mixes the optimum with new runs.
            fresh = _draw(problem, drawn, config.population - config.elite, rng)
            evaluations += drawn
            elite = rank(latency, violation)[: config.elite]
            dims, shares, latency, violation = (np.concatenate([old[elite], new])
                                                for old, new in zip((dims, shares, latency, violation), fresh))
            since_restart = 0
        order = rank(latency, violation)
        elite = order[: config.elite]
        n_children = config.population - config.elite
        parents = _tournament(latency, violation, config.tournament, 2 * n_children, rng)
        child_dims = np.empty((n_children, problem.n_ops), dtype=np.int8)
        child_shares = np.empty((n_children, problem.n_ops, problem.n_devices))
        for c in range(n_children):
            a, b = parents[2 * c], parents[2 * c + 1]
            if rng.random() < config.crossover_rate:
                cd, cs = _crossover(dims[a], shares[a], dims[b], shares[b], rng)
            else:
                cd, cs = dims[a].copy(), shares[a].copy()
            child_dims[c], child_shares[c] = _mutate(cd, cs, problem, config, rng)
        c_lat, c_vio = _evaluate(problem, child_dims, child_shares)
        evaluations += n_children
        dims = np.concatenate([dims[elite], child_dims])
        shares = np.concatenate([shares[elite], child_shares])
        latency = np.concatenate([latency[elite], c_lat])
        violation = np.concatenate([violation[elite], c_vio])
        top = rank(latency, violation)[0]
        if better(latency[top], violation[top], best_lat, best_vio):
            best_dims, best_shares = dims[top].copy(), shares[top].copy()
            best_lat, best_vio = float(latency[top]), float(violation[top])
            stale = since_restart = 0
        else:
            stale += 1
            since_restart += 1
        feasible = violation <= 0
        stats = GenerationStats(
            generation=gen + 1,
            best_latency=best_lat if best_vio <= 0 else float("inf"),
            best_violation=best_vio,
            mean_latency=float(latency[feasible].mean()) if feasible.any() else float("inf"),
            feasible_fraction=float(feasible.mean()),
            evaluations=evaluations,
        )
        history.append(stats)
        if progress is not None:
            progress(stats)
        if config.patience is not None and stale >= config.patience:
            break
    if config.polish:
        best_dims, best_shares, best_lat, best_vio, extra = polish(problem, best_dims, best_shares, best_lat, best_vio)
        evaluations += extra
    return GAResult(best_dims, best_shares, best_lat, best_vio, tuple(history), evaluations)


def _evaluate(problem, dims, shares):
    if problem.canonical is not None:  # in place: the population keeps the snapped genes
        dims[:], shares[:] = problem.canonical(dims, shares)
    latency, violation = problem.evaluate(dims, shares)
    latency = np.asarray(latency, dtype=float)
    violation = np.asarray(violation, dtype=float)
    if latency.shape != (dims.shape[0],) or violation.shape != (dims.shape[0],):
        raise ValueError("evaluate must return one latency and one violation per individual")
    return latency, violation
