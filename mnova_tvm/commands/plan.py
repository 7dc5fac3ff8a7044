"""`mnova plan MODEL --cluster FILE -o PLAN.json`: a partition plan for a cluster."""

from __future__ import annotations

from .. import planners
from ..btsearch import btsearch
from ..errors import MnovaError
from ..graph import from_relax
from ..partition import device_memory, segments, traffic
from ..report import mib
from ..runtime import prepare
from ..targets import load_cluster
from .model_args import add_model_arguments, load_from_args

STRATEGIES = ("height", "channel", "single")


def register(sub) -> None:
    parser = sub.add_parser("plan", help="partition a model across a cluster's devices (writes Plan JSON)")
    add_model_arguments(parser)
    parser.add_argument("--cluster", required=True, help="cluster JSON (or a name under targets/clusters/)")
    parser.add_argument("--strategy", default="height", metavar="S",
                        help="height / channel: every layer split in proportion to device speed; "
                             "single[:DEVICE]: everything on one device (default: the fastest)")
    parser.add_argument("--proportions", default=None, metavar="P1,P2,...", help="per-device proportions for height/channel")
    parser.add_argument("-o", "--output", required=True, metavar="PLAN.json")
    parser.set_defaults(func=run)


def make_plan(graph, cluster, strategy: str, proportions=None):
    kind, _, device = strategy.partition(":")
    order = btsearch(graph).order
    if kind in ("height", "channel"):
        return planners.proportional(graph, cluster, kind, order, proportions)
    if kind == "single":
        speeds = planners.device_speeds(cluster)
        device = device or cluster.devices[max(range(len(speeds)), key=speeds.__getitem__)].name
        return planners.single_device(graph, cluster, device, order)
    raise MnovaError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")


def summary(graph, plan, cluster) -> list[str]:
    segs = segments(graph, plan)
    memory = device_memory(graph, plan, segs)
    moved = sum(t.nbytes for t in traffic(graph, plan, segs))
    lines = [f"{len(plan.order)} operators in {len(segs)} segments; {mib(moved)} MiB through the coordinator per inference"]
    for d, device in enumerate(cluster.devices):
        ok = "ok" if memory[d] <= device.memory_budget_bytes else "OVER BUDGET"
        lines.append(f"  {device.name:8s} {sum(s.active(d) for s in segs):4d} segments  memory {mib(memory[d])} MiB "
                     f"of {mib(device.memory_budget_bytes)} MiB  {ok}")
    return lines


def run(args) -> int:
    cluster = load_cluster(args.cluster)
    proportions = None
    if args.proportions:
        try:
            proportions = [float(p) for p in args.proportions.split(",")]
        except ValueError:
            raise MnovaError(f"--proportions {args.proportions!r} must be numbers separated by commas") from None
    _, mod = load_from_args(args)
    graph = from_relax(prepare(mod))
    plan = make_plan(graph, cluster, args.strategy, proportions)
    plan.save(args.output, graph)
    print("\n".join(summary(graph, plan, cluster)))
    print(f"plan written to {args.output}")
    return 0
