"""The main job: ONNX in, a plan that meets every device's budget, run over RPC, checked, measured.

import -> BTSearch order -> cost model (a quick profile first if none covers the cluster) ->
GenEFlow and the baselines under the same cost model -> compile per device -> deploy over RPC ->
run -> check against one device -> report. Used by `mnova run`, `mnova demo` and
`mnova bench latency`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import tvm

from . import cluster as testbed
from .btsearch import btsearch
from .deploy import RunReport, coordinator_latencies, run_plan
from .graph import from_relax
from .planners import PlanEvaluator, PlannerResult, compare_planners, infeasible_error, plan_with
from .profile import cost_model_for
from .runtime import prepare
from .targets import Cluster

CACHE = Path.home() / ".cache" / "mnova"


def default_cost_model_path(cluster: Cluster) -> Path:
    return CACHE / f"cost-{cluster.name}.json"


@dataclass
class JobResult:
    model: str
    planners: list[PlannerResult]
    runs: dict[str, RunReport] = field(default_factory=dict)  # strategy -> measured run

    @property
    def geneflow(self) -> PlannerResult:
        return self.planners[0]


def main_job(name: str, mod: tvm.IRModule, cluster: Cluster, state: testbed.ClusterState, workdir: Path,
             cost_model_path: Path | None = None, compare: bool = False, measure: Sequence[str] = ("geneflow",),
             ga_config=None, repeat: int = 5, inputs=None, over_budget: Sequence[str] = (), log=print) -> JobResult:
    """Plan with GenEFlow (and, with `compare`, every baseline), then run the `measure`d plans;
    a plan predicted over budget runs only if its strategy is in `over_budget` (a reference:
    the emulated devices' memory limits leave room above their budgets)."""
    from . import frontend

    mod = prepare(mod)
    graph = from_relax(mod, name)
    order = btsearch(graph).order
    model = cost_model_for(cluster, state, [(name, mod)], cost_model_path or default_cost_model_path(cluster),
                           workdir, given=cost_model_path is not None, log=log)
    evaluator = PlanEvaluator(graph, cluster, order, model, coordinator_latencies(cluster, state))

    def progress(stats):
        if stats.generation % 10 == 0:
            best = "none feasible" if stats.best_latency == float("inf") else f"{1e3 * stats.best_latency:.1f} ms"
            log(f"GenEFlow generation {stats.generation}: best {best}, {100 * stats.feasible_fraction:.0f}% feasible")

    results = compare_planners(evaluator, ga_config, progress) if compare else \
        [plan_with("geneflow", evaluator, ga_config, progress)]
    ga = results[0]
    if not ga.score.feasible:
        raise infeasible_error(evaluator, ga.plan, ga.score)
    job = JobResult(name, results)
    inputs = inputs if inputs is not None else frontend.random_inputs(mod)
    for result in results:
        strategy = "geneflow" if result is ga else result.name.split(":")[0]
        if strategy not in measure:
            continue
        if not result.score.feasible and strategy not in over_budget:
            log(f"{result.name}: predicted over budget, not run")
            continue
        log(f"deploying the {result.name} plan")
        job.runs[result.name] = run_plan(mod, graph, result.plan, cluster, state, inputs, workdir / result.name.replace(":", "-"),
                                         name, repeat, log=log)
    return job
