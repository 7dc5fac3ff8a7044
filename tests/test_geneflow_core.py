"""The GenEFlow GA on synthetic problems whose optimum is known in closed form."""

import numpy as np
import pytest

from mnova_tvm.errors import MnovaError
from mnova_tvm.geneflow import (DIM_CHANNEL, DIM_HEIGHT, DIM_NONE, GAConfig, PartitionProblem, better, rank,
                                run_geneflow)

SPEEDS = np.array([4.0, 2.0, 1.0, 1.0])


def synthetic_problem(n_ops=12, budgets=None, transfer_cost=0.0, allowed=None, seed=1):
    """Latency: per op, split ops take max over devices of share*flops/speed; a none op runs whole on
    its largest-share device; a change of gene between neighbours costs `transfer_cost`.
    Memory: each device holds its share of every op's weights."""
    rng = np.random.default_rng(seed)
    flops = rng.uniform(1.0, 10.0, n_ops)
    weights = rng.uniform(1.0, 5.0, n_ops)
    if allowed is None:
        allowed = np.ones((n_ops, 3), dtype=bool)
    budgets = np.full(len(SPEEDS), np.inf) if budgets is None else np.asarray(budgets, float)

    def evaluate(dims, shares):
        owner = shares.argmax(axis=2)
        onehot = np.eye(len(SPEEDS))[owner]
        eff = np.where((dims == DIM_NONE)[..., None], onehot, shares)
        per_op = (eff * flops[None, :, None] / SPEEDS).max(axis=2)
        changes = (np.abs(np.diff(eff, axis=1)).sum(axis=2) > 1e-9) | (np.diff(dims, axis=1) != 0)
        latency = per_op.sum(axis=1) + transfer_cost * changes.sum(axis=1)
        memory = (eff * weights[None, :, None]).sum(axis=1)
        violation = np.clip(memory - budgets, 0, None).sum(axis=1)
        return latency, violation

    return PartitionProblem(allowed, len(SPEEDS), evaluate), flops, weights


def test_deb_rules():
    assert better(1.0, 0.0, 2.0, 0.0)
    assert better(9.0, 0.0, 1.0, 5.0)  # feasible beats infeasible whatever the latency
    assert better(1.0, 2.0, 1.0, 3.0)
    assert not better(1.0, 0.0, 1.0, 0.0)
    order = rank(np.array([5.0, 1.0, 3.0, 0.5]), np.array([0.0, 2.0, 0.0, 1.0]))
    assert list(order) == [2, 0, 3, 1]


def test_finds_speed_proportional_split_without_transfer_costs():
    problem, flops, _ = synthetic_problem()
    result = run_geneflow(problem, GAConfig(population=48, generations=150, seed=0))
    optimum = flops.sum() / SPEEDS.sum()
    single_best = flops.sum() / SPEEDS.max()
    assert result.feasible
    assert result.latency < single_best * 0.85
    assert result.latency <= optimum * 1.10
    history = [h.best_latency for h in result.history]
    assert all(b <= a for a, b in zip(history, history[1:])), "elitism keeps the best"


def test_feasibility_first_meets_tight_budgets():
    problem, _, weights = synthetic_problem(budgets=None)
    # every device can hold only ~30% of all weights: only split plans fit.
    budgets = np.full(len(SPEEDS), 0.30 * weights.sum())
    problem, _, _ = synthetic_problem(budgets=budgets)
    result = run_geneflow(problem, GAConfig(population=48, generations=100, seed=3))
    assert result.feasible
    latency, violation = problem.evaluate(result.dims[None], result.shares[None])
    assert violation[0] == 0 and latency[0] == pytest.approx(result.latency)


def test_respects_allowed_dims_and_is_deterministic():
    allowed = np.ones((12, 3), dtype=bool)
    allowed[::2, DIM_HEIGHT] = False
    allowed[1::3, DIM_CHANNEL] = False
    problem, _, _ = synthetic_problem(allowed=allowed, transfer_cost=0.5)
    a = run_geneflow(problem, GAConfig(generations=30, seed=7))
    b = run_geneflow(problem, GAConfig(generations=30, seed=7))
    c = run_geneflow(problem, GAConfig(generations=30, seed=8))
    assert np.array_equal(a.dims, b.dims) and np.array_equal(a.shares, b.shares) and a.latency == b.latency
    assert allowed[np.arange(12), a.dims].all()
    assert np.allclose(a.shares.sum(axis=1), 1.0)
    assert not (np.array_equal(a.shares, c.shares) and a.latency == c.latency)


def test_transfer_costs_favour_long_segments():
    problem, _, _ = synthetic_problem(transfer_cost=5.0)
    result = run_geneflow(problem, GAConfig(population=48, generations=120, seed=0))
    changes = int((np.diff(result.dims) != 0).sum())
    assert changes <= 2


def test_bad_config():
    problem, _, _ = synthetic_problem()
    with pytest.raises(MnovaError):
        run_geneflow(problem, GAConfig(population=2))
