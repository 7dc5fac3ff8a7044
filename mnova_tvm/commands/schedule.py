"""`mnova schedule MODEL`: BTSearch's memory-optimal order, as Schedule JSON and a plot."""

from __future__ import annotations

from ..btsearch import btsearch
from ..graph import OpGraph, from_relax
from ..memory import activation_peak, memory_profile
from ..orders import greedy_memory_order, random_order_peaks, random_topological_orders
from ..report import mib, plot_memory_profiles
from ._io import write_json
from .model_args import add_model_arguments, load_from_args


def register(sub) -> None:
    parser = sub.add_parser("schedule", help="find the operator order with the smallest activation peak (BTSearch)")
    add_model_arguments(parser)
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="stop the search after S seconds and report the best order and the gap")
    parser.add_argument("--json", metavar="FILE", help="write the schedule (DESIGN.md Schedule JSON)")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of memory over steps: a random, the import and the BTSearch order")
    parser.add_argument("--random-orders", type=int, default=100, help="random orders for the baseline (default 100)")
    parser.set_defaults(func=run)


def schedule_json(name: str, graph: OpGraph, result, baselines: dict) -> dict:
    """The Schedule JSON of DESIGN.md."""
    tensors = {}
    for t in graph.tensors.values():
        entry = {"bytes": t.nbytes, "kind": t.kind}
        if t.view_of is not None:
            entry["view_of"] = t.view_of
        tensors[t.name] = entry
    return {
        "model": name,
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs)} for n in graph.nodes],
        "tensors": tensors,
        "graph_outputs": list(graph.graph_outputs),
        "order": list(result.order),
        "peak_bytes": result.peak_bytes,
        "optimal": result.optimal,
        "lower_bound_bytes": result.lower_bound_bytes,
        "search_seconds": round(result.search_seconds, 6),
        "baselines": baselines,
    }


def baselines(graph: OpGraph, random_orders: int) -> dict:
    random_mean, random_best = random_order_peaks(graph, random_orders, seed=0)
    return {
        "import_order": activation_peak(graph),
        "random_mean": round(random_mean),
        "random_best": random_best,
        "greedy": activation_peak(graph, greedy_memory_order(graph)),
    }


def run(args) -> int:
    name, mod = load_from_args(args)
    graph = from_relax(mod, name)
    result = btsearch(graph, args.time_budget)
    base = baselines(graph, args.random_orders)
    status = "proved optimal" if result.optimal else f"not proved, gap {mib(result.gap_bytes)} MiB"
    print(f"{name}: {len(graph.nodes)} operators, BTSearch peak {mib(result.peak_bytes)} MiB ({status}) "
          f"in {result.search_seconds:.2f} s, lower bound {mib(result.lower_bound_bytes)} MiB")
    for label, peak in base.items():
        print(f"  {label:13s} {mib(peak):>9s} MiB   BTSearch saves {100 * (1 - result.peak_bytes / peak):5.1f}%")
    if args.json:
        write_json(args.json, schedule_json(name, graph, result, base))
        print(f"wrote {args.json}")
    if args.plot:
        plot_memory_profiles({"random order": memory_profile(graph, random_topological_orders(graph, 1, seed=0)[0]),
                              "import order": memory_profile(graph, graph.import_order),
                              "BTSearch order": memory_profile(graph, result.order)},
                             args.plot, f"{name}: activation memory per step")
        print(f"wrote {args.plot}")
    return 0
