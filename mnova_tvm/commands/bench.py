"""`mnova bench memory`: BTSearch against its baselines and TVM's planner against ours, per model."""

from __future__ import annotations

import sys
import time

from .. import zoo
from ..btsearch import btsearch
from ..frontend import load_model, model_name
from ..graph import from_relax
from ..memory import tvm_planned_bytes
from ..report import markdown_table, mib, results_header
from ..transform import planned_bytes, reorder_main
from ._io import atomic_path
from .schedule import baselines


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks that write committed results files")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    memory = kinds.add_parser("memory", help="activation peak: import, random, greedy, BTSearch; planned bytes")
    memory.add_argument("models", nargs="*", help="zoo names or ONNX files (default: the 11 zoo models)")
    memory.add_argument("--out", default="benchmarks/memory.md", help="results file (default benchmarks/memory.md)")
    memory.add_argument("--random-orders", type=int, default=100)
    memory.add_argument("--time-budget", type=float, default=60.0, help="per-model BTSearch budget in seconds")
    memory.set_defaults(func=run_memory)


def memory_row(model, random_orders: int, time_budget: float) -> list:
    mod = load_model(model)
    graph = from_relax(mod, model_name(model))
    result = btsearch(graph, time_budget)
    base = baselines(graph, random_orders)
    ordered = reorder_main(mod, result.order)
    tvm_import = tvm_planned_bytes(mod)
    tvm_ordered = tvm_planned_bytes(ordered)
    ours = planned_bytes(ordered)
    peak = result.peak_bytes
    return [
        model_name(model), len(graph.nodes), mib(base["import_order"]), mib(base["random_mean"]),
        mib(base["random_best"]), mib(base["greedy"]), mib(peak),
        f"{100 * (1 - peak / base['import_order']):.1f}", f"{100 * (1 - peak / base['random_mean']):.1f}",
        "yes" if result.optimal else f"no (gap {mib(result.gap_bytes)})", f"{result.search_seconds:.3f}",
        mib(tvm_import), mib(tvm_ordered), mib(ours), f"{ours / peak:.3f}",
    ]


def run_memory(args) -> int:
    models = args.models or list(zoo.MODELS)
    header = ["model", "ops", "import", "random mean", "random best", "greedy", "BTSearch", "saved vs import %",
              "saved vs random mean %", "proved", "search s", "TVM planned (import order)",
              "TVM planned (BTSearch order)", "ours (arena, BTSearch order)", "ours / peak"]
    rows, total_search = [], 0.0
    for i, model in enumerate(models, 1):
        started = time.perf_counter()
        row = memory_row(model, args.random_orders, args.time_budget)
        total_search += float(row[10])
        rows.append(row)
        print(f"[{i}/{len(models)}] {row[0]}: BTSearch {row[6]} MiB, proved {row[9]}, TVM {row[12]} MiB, "
              f"ours {row[13]} MiB ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    text = results_header("Memory: operator order and planned storage") + f"""
Activation memory in MiB (DESIGN.md semantics: weights apart, inputs and outputs counted).
Random: {args.random_orders} seeded random topological orders. Greedy: memory-aware list scheduling
(PyTorch inductor style). TVM planned: StaticPlanBlockMemory storage; ours: ArenaPlanMemory (one
arena, offsets by greedy-by-size); both exclude the input and the returned output.
Total BTSearch time: {total_search:.2f} s.

""" + markdown_table(header, rows)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(text)
    return 0
