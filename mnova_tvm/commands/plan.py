"""`mnova plan MODEL --cluster FILE -o PLAN.json`: a partition plan for a cluster (GenEFlow by default)."""

from __future__ import annotations

from pathlib import Path

from ..btsearch import btsearch
from ..costmodel import CostModel
from ..deploy import coordinator_latencies
from ..errors import MnovaError
from ..geneflow import GAConfig
from ..graph import from_relax
from ..partition import segments, traffic
from ..pipeline import default_cost_model_path
from ..planners import STRATEGIES, PlanEvaluator, infeasible_error, plan_with, proportional, single_device
from ..report import mib
from ..runtime import prepare
from ..targets import load_cluster
from .model_args import add_model_arguments, load_from_args


def register(sub) -> None:
    parser = sub.add_parser("plan", help="partition a model across a cluster's devices (writes Plan JSON)")
    add_model_arguments(parser)
    parser.add_argument("--cluster", required=True, help="cluster JSON (or a name under targets/clusters/)")
    parser.add_argument("--strategy", default="geneflow", metavar="S",
                        help=f"one of {', '.join(STRATEGIES)} (single:DEVICE for one device); default geneflow")
    parser.add_argument("--cost-model", default=None, help="cost model file (default: the cluster's, from mnova run/profile)")
    parser.add_argument("--proportions", default=None, metavar="P1,P2,...",
                        help="per-device proportions for height/channel (no cost model needed)")
    parser.add_argument("--generations", type=int, default=60, help="GenEFlow generations (default 60)")
    parser.add_argument("--population", type=int, default=48, help="GenEFlow population (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="GenEFlow seed (default 0)")
    parser.add_argument("-o", "--output", required=True, metavar="PLAN.json")
    parser.set_defaults(func=run)


def summary(graph, plan, cluster, memory) -> list[str]:
    segs = segments(graph, plan)
    moved = sum(t.nbytes for t in traffic(graph, plan, segs))
    lines = [f"{len(plan.order)} operators in {len(segs)} segments; {mib(moved)} MiB through the coordinator per inference"]
    for d, device in enumerate(cluster.devices):
        ok = "ok" if memory[d] <= device.memory_budget_bytes else "OVER BUDGET"
        lines.append(f"  {device.name:8s} {sum(s.active(d) for s in segs):4d} segments  memory {mib(memory[d])} MiB "
                     f"of {mib(device.memory_budget_bytes)} MiB  {ok}")
    return lines


def planner_table(results) -> list[str]:
    lines = [f"{'planner':22s} {'predicted ms':>12s} {'fits budgets':>12s} {'planning s':>10s} {'evaluations':>11s}"]
    for r in results:
        lines.append(f"{r.name:22s} {1e3 * r.score.latency_s:12.1f} {'yes' if r.score.feasible else 'no':>12s} "
                     f"{r.seconds:10.2f} {r.evaluations:11d}")
    return lines


def run(args) -> int:
    from ..partition import device_memory

    cluster = load_cluster(args.cluster)
    _, mod = load_from_args(args)
    graph = from_relax(prepare(mod))
    order = btsearch(graph).order
    kind = args.strategy.partition(":")[0]
    if args.proportions:
        if kind not in ("height", "channel"):
            raise MnovaError("--proportions goes with --strategy height or channel")
        try:
            proportions = [float(p) for p in args.proportions.split(",")]
        except ValueError:
            raise MnovaError(f"--proportions {args.proportions!r} must be numbers separated by commas") from None
        plan = proportional(graph, cluster, kind, order, proportions)
    elif kind in ("height", "channel") or (kind == "single" and ":" in args.strategy):
        plan = proportional(graph, cluster, kind, order) if kind != "single" else \
            single_device(graph, cluster, args.strategy.partition(":")[2], order)
    else:
        path = Path(args.cost_model) if args.cost_model else default_cost_model_path(cluster)
        if not path.exists():
            raise MnovaError(f"no cost model at {path}: run `mnova profile --cluster {args.cluster}` and "
                             f"`mnova train-cost-model`, or `mnova run` once (it profiles quickly)")
        evaluator = PlanEvaluator(graph, cluster, order, CostModel.load(path), coordinator_latencies(cluster, None))
        result = plan_with(args.strategy, evaluator,
                           GAConfig(population=args.population, generations=args.generations, seed=args.seed))
        print("\n".join(planner_table([result])))
        if not result.score.feasible and kind == "geneflow":
            raise infeasible_error(evaluator, result.plan, result.score)
        plan = result.plan
    plan.save(args.output, graph)
    print("\n".join(summary(graph, plan, cluster, device_memory(graph, plan))))
    print(f"plan written to {args.output}")
    return 0
