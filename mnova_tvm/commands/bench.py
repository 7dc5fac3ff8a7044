"""`mnova bench memory | latency | kernels | planners | costmodel`: the benchmarks that write committed results files."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from .. import zoo
from ..btsearch import btsearch
from ..frontend import load_model, model_name
from ..graph import from_relax
from ..memory import tvm_planned_bytes
from ..report import markdown_table, mib, plot_learning_curve, results_header
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
    latency = kinds.add_parser("latency", help="GenEFlow against its baselines, measured on the emulated cluster")
    latency.add_argument("models", nargs="*", help="zoo names or ONNX files (default: the 11 zoo models)")
    latency.add_argument("--cluster", default="local4", help="cluster whose devices and links to use (default local4)")
    latency.add_argument("--budget-fractions", default="1.2,0.6,0.5,0.4", metavar="F1,F2,...",
                         help="each device's budget as a fraction of the model's single-device need "
                              "(default 1.2,0.6,0.5,0.4: only the first device holds the whole model)")
    latency.add_argument("--input-size", type=int, default=None, help="input size of zoo models (default standard)")
    latency.add_argument("--generations", type=int, default=40)
    latency.add_argument("--repeat", type=int, default=3)
    latency.add_argument("--out", default="benchmarks/latency.md", help="results file (default benchmarks/latency.md)")
    latency.set_defaults(func=run_latency)
    kernels = kinds.add_parser("kernels", help="ONNX Runtime against TVM's default build and our schedules, default and tuned")
    kernels.add_argument("models", nargs="*", help="zoo names or ONNX files (default: the 11 zoo models)")
    kernels.add_argument("--input-size", type=int, default=None, help="input size of zoo models (default standard)")
    kernels.add_argument("--threads", default="1,all", help="thread counts to measure, 'all' = every core (default 1,all)")
    kernels.add_argument("--tune", nargs="*", default=[], metavar="MODEL",
                         help="models to tune with MetaSchedule for the one-thread build before measuring")
    kernels.add_argument("--trials", type=int, default=16, help="tuning trials per kernel (default 16)")
    kernels.add_argument("--tune-kernels", type=int, default=8, help="tune the N heaviest kernels of a model (default 8)")
    kernels.add_argument("--database", default=str(Path.home() / ".cache" / "mnova" / "tuning-bench"),
                         help="tuning folder (reused across runs; default ~/.cache/mnova/tuning-bench)")
    kernels.add_argument("--seconds", type=float, default=2.0, help="timing budget per measurement (default 2 s)")
    kernels.add_argument("--out", default="benchmarks/kernels.md", help="results file (default benchmarks/kernels.md)")
    kernels.set_defaults(func=run_kernels)

    planners = kinds.add_parser("planners", help="GenEFlow against random search and the baselines, predicted (no cluster)")
    planners.add_argument("models", nargs="*", help="zoo names or ONNX files (default: the 11 zoo models)")
    planners.add_argument("--cluster", default="local4", help="cluster whose devices and links to use (default local4)")
    planners.add_argument("--cost-model", default=None, help="cost model (default: the cluster's, from mnova run or bench latency)")
    planners.add_argument("--budget-fractions", default="0.9,0.6,0.5,0.4", metavar="F1,F2,...",
                          help="each device's budget as a fraction of the model's single-device need")
    planners.add_argument("--seeds", default="0,1,2", help="GenEFlow and random-search seeds (default 0,1,2)")
    planners.add_argument("--generations", type=int, default=40)
    planners.add_argument("--out", default="benchmarks/planners.md", help="results file (default benchmarks/planners.md)")
    planners.set_defaults(func=run_planners)

    costmodel = kinds.add_parser("costmodel", help="cost-model accuracy: held-out operator shapes, and plans "
                                                   "predicted against measured on a cluster")
    costmodel.add_argument("models", nargs="*", help="zoo names or ONNX files whose plans to measure "
                                                     "(default: the 11 zoo models)")
    costmodel.add_argument("--dataset", default=str(Path.home() / ".cache" / "mnova" / "profile.jsonl"),
                           help="profiling dataset of mnova profile (default ~/.cache/mnova/profile.jsonl); with "
                                "--cluster, the first model is quick-profiled into it if it lacks that model")
    costmodel.add_argument("--train-also", default=None, metavar="DATASET",
                           help="another profiling dataset whose slices every split also trains on (those of the "
                                "split's held-out shapes left out): what profiling them buys --dataset's held-out shapes")
    costmodel.add_argument("--cluster", default=None,
                           help="cluster to measure plans on, and to time profiled slices again for the noise floor "
                                "(default: none, held-out operator shapes only)")
    costmodel.add_argument("--plans", default="single,height,geneflow", metavar="S1,S2,...",
                           help="planner strategies whose plans are measured (default single,height,geneflow)")
    costmodel.add_argument("--splits", type=int, default=5, help="held-out splits by operator shape (default 5)")
    costmodel.add_argument("--test-fraction", type=float, default=0.2, help="operator shapes held out per split")
    costmodel.add_argument("--remeasure", type=int, default=150, help="profiled slices timed again per device kind (0: none)")
    costmodel.add_argument("--generations", type=int, default=40)
    costmodel.add_argument("--repeat", type=int, default=9)
    costmodel.add_argument("--out", default="benchmarks/costmodel.md", help="results file (default benchmarks/costmodel.md)")
    costmodel.set_defaults(func=run_costmodel)


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


def _fractions(text: str, cluster) -> list[float]:
    """--budget-fractions: one number per device of the cluster."""
    from ..errors import MnovaError

    try:
        fractions = [float(f) for f in text.split(",")]
    except ValueError:
        fractions = []
    if len(fractions) != len(cluster.devices):
        raise MnovaError(f"--budget-fractions needs {len(cluster.devices)} numbers separated by commas for "
                         f"cluster {cluster.name}, not {text!r}")
    return fractions


def _budgeted(cluster, need: int, fractions: list[float]):
    import dataclasses

    devices = tuple(dataclasses.replace(d, memory_budget_bytes=int(f * need)) for d, f in zip(cluster.devices, fractions))
    return dataclasses.replace(cluster, devices=devices)


# An emulated device's RPC server grows while it loads library after library (10-25 MiB each,
# glibc and TVM's module loading); on a small memory limit a long profile outlives it.
PROFILING_RESTARTS = 4


def _measured_memory(run) -> str:
    """Each device's measured memory (server peak over its idle memory before loading) and
    whether all are within budget: "6.1/4.0/-/- (≤ budget)"."""
    if run is None:
        return "-"
    used = [None if d.peak_bytes is None or d.idle_bytes is None else d.peak_bytes - d.idle_bytes for d in run.devices]
    within = all(u <= d.budget_bytes for u, d in zip(used, run.devices) if u is not None)
    return "/".join("-" if u is None else f"{u / 2**20:.1f}" for u in used) + (" (≤ budget)" if within else " (OVER)")


def run_latency(args) -> int:
    import tempfile

    from .. import cluster as testbed
    from ..geneflow import GAConfig
    from ..errors import MnovaError, ProfilingInterrupted
    from ..partition import device_memory, segments, single_device_plan
    from ..pipeline import default_cost_model_path, main_job
    from ..profile import cost_model_for
    from ..runtime import prepare
    from ..targets import load_cluster

    base = load_cluster(args.cluster)
    cost_model_path = default_cost_model_path(base)
    fractions = _fractions(args.budget_fractions, base)
    models = args.models or list(zoo.MODELS)
    header = ["model", "budgets MiB", "plan", "predicted ms", "measured ms", "vs best single %",
              "GenEFlow faster by %", "planning s", "planned memory ≤ budget", "measured memory MiB", "output",
              "segments"]
    rows = []
    for i, model in enumerate(models, 1):
        mod = prepare(load_model(model, input_size=args.input_size))
        name = model_name(model)
        graph = from_relax(mod, name)
        need = device_memory(graph, single_device_plan(graph, ["d"], 0))[0]
        cluster = _budgeted(base, need, fractions)
        print(f"[{i}/{len(models)}] {name}: single-device need {mib(need)} MiB", file=sys.stderr, flush=True)
        budgets = "/".join(f"{d.memory_budget_bytes / 2**20:.1f}" for d in cluster.devices)
        try:
            # Profiled and calibrated with the cluster's own memory limits: the budgets below are
            # for the plans, and a device profiling under them is only more likely to be killed.
            for restarts in range(PROFILING_RESTARTS + 1):
                try:
                    with tempfile.TemporaryDirectory(prefix="mnova-bench-") as workdir, \
                            testbed.LocalCluster(base) as state:
                        cost_model_for(base, state, [(name, mod)], cost_model_path, Path(workdir))
                    break
                except ProfilingInterrupted as err:  # resumable: a fresh cluster goes on from the last row
                    if restarts == PROFILING_RESTARTS:
                        raise
                    print(f"{name}: {err}; restarting the cluster ({restarts + 1}/{PROFILING_RESTARTS})",
                          file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="mnova-bench-") as workdir, testbed.LocalCluster(cluster) as state:
                job = main_job(name, mod, cluster, state, Path(workdir), cost_model_path=cost_model_path, compare=True,
                               measure=("geneflow", "single", "height", "channel", "greedy", "random"),
                               ga_config=GAConfig(generations=args.generations), repeat=args.repeat,
                               over_budget=("single",))
        except MnovaError as err:  # one model's failure is a row of the results, not the end of the benchmark
            print(f"{name}: {err}", file=sys.stderr, flush=True)
            rows.append([name, budgets, f"failed: {err}"] + ["-"] * (len(header) - 3))
        else:
            single = [r.median_ms for label, r in job.runs.items() if label.startswith("single")]
            geneflow_ms = job.runs[job.geneflow.name].median_ms
            for planner in job.planners:
                run = job.runs.get(planner.name)
                fits = all(m <= d.memory_budget_bytes for m, d in zip(planner.score.memory_bytes, cluster.devices))
                measured = "not run (over budget)" if run is None else \
                    f"{run.median_ms:.1f}" if fits else f"{run.median_ms:.1f} (over budget)"
                rows.append([name, budgets, planner.name, f"{1e3 * planner.score.latency_s:.1f}", measured,
                             f"{100 * (1 - run.median_ms / single[0]):+.1f}" if run and single else "-",
                             f"{100 * (1 - geneflow_ms / run.median_ms):+.1f}" if run and planner is not job.geneflow else "-",
                             f"{planner.seconds:.1f}", "yes" if fits else "no", _measured_memory(run),
                             ("ok" if run.matches else "WRONG") if run else "-", len(segments(graph, planner.plan))])
        text = results_header("Latency: GenEFlow and its baselines on the emulated edge cluster") + f"""
Cluster `{base.name}` ({", ".join(f"{d.name}: {d.cpu_quota or 1:g} CPU, {d.link.bandwidth_mbps:g} Mbit/s, {d.link.latency_ms:g} ms" for d in base.devices)}),
emulated (network namespaces, tc bandwidth shaping, link latency added per transfer by the coordinator, cgroup CPU
quota and memory limit = budget + the RPC server's runtime allowance). Budgets are fractions {args.budget_fractions} of each
model's single-device need. Predicted: the XGBoost cost model's plan-level estimate (quick profile of the model and
whole-model calibration per device kind, both under the cluster's own memory limits);
measured: median of {args.repeat} runs after a warm-up, through the coordinator over TVM RPC; output checked against
single-device TVM (rtol 1e-5, atol 1e-5 of the largest output). Measured memory: each device's server peak (cgroup) over its memory before the plan was
loaded (code, weights uploaded tensor by tensor, activations, RPC buffers). "vs best single": latency reduction against the
single device predicted fastest, which is run even when its budget cannot hold the model (then marked "over budget": the
latency a device with enough memory would give; the emulated memory limits leave room above the budgets). "GenEFlow faster by": GenEFlow's measured latency
against that plan's. GenEFlow: {args.generations} generations, population 48; random search gets as many evaluations.
A device that dies while profiling (memory limit) gets a fresh cluster and profiling resumes (up to {PROFILING_RESTARTS} times).

""" + markdown_table(header, rows)
        with atomic_path(args.out) as tmp:  # rewritten after every model: partial results survive
            tmp.write_text(text)
    print(text)
    return 0


def _median_ms(run, seconds: float) -> float:
    """Median of repeated timings; how many follows from one warm-up run (3 to 50)."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    samples = []
    for _ in range(max(3, min(50, int(seconds / max(once, 1e-6))))):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return 1e3 * sorted(samples)[len(samples) // 2]


def _side_by_side_ms(runs: dict, seconds: float, rounds: int = 3) -> dict:
    """Median over `rounds` rounds of each run's median, the runs taking turns within a round, so
    a change of load on this shared machine falls on all of them alike."""
    import statistics

    samples = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            samples[label].append(_median_ms(run, seconds / rounds))
    return {label: statistics.median(values) for label, values in samples.items()}


def _onnx_model(model, input_size):
    from ..frontend import read_onnx

    return zoo.build(model, input_size=input_size, seed=0) if model in zoo.MODELS else read_onnx(model)


def _host_board(threads: int):
    """This machine's CPU, named, as a board with `threads` cores."""
    import dataclasses

    from tvm.target import codegen

    from ..targets import load_board

    cpu = codegen.llvm_get_system_cpu()
    return dataclasses.replace(load_board("host"), name=f"host-{cpu}-{threads}t", cores=threads,
                               target={"kind": "llvm", "mcpu": cpu, "num-cores": threads})


def run_kernels(args) -> int:
    import os

    import numpy as np
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from ..compile import build
    from ..frontend import import_onnx, input_specs
    from ..tune import tune, tuned

    settings = sorted({os.cpu_count() if t == "all" else int(t) for t in args.threads.split(",")})
    # TVM sizes its thread pool once, from TVM_NUM_THREADS or the physical cores (1 on a 2-vCPU VM),
    # and config_threadpool cannot grow it: without this, "2 threads" ran ours on one.
    os.environ["TVM_NUM_THREADS"] = str(max(settings))
    set_threads = tvm.get_global_func("runtime.config_threadpool")
    models = args.models or list(zoo.MODELS)
    header = ["model", "input", "threads", "ORT ms", "TVM default ms", "ours ms", "ours tuned ms", "TVM default / ORT",
              "ours / ORT", "tuned / ORT", "ours vs TVM default (max rel. diff)", "tuning"]
    rows, ours_ratios = [], []
    for i, model in enumerate(models, 1):
        proto = _onnx_model(model, args.input_size)
        name = model_name(model)
        mod = import_onnx(proto, source=name)
        (_, shape, dtype), = input_specs(mod)
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        dev = tvm.cpu()
        xt = tvm.runtime.tensor(x, device=dev)

        def loaded(exe):
            """(the VM's first output, a call that runs it) for an executable."""
            vm = relax.VirtualMachine(exe, dev)
            out = vm["main"](xt)
            return (out[0] if isinstance(out, tvm.ir.Array) else out).numpy(), lambda: vm["main"](xt)

        started = time.perf_counter()
        tvm_default = tvm.compile(mod, _host_board(1).tvm_target())  # unscheduled: the same code at any thread count
        for threads in settings:
            set_threads(1, threads)
            board = _host_board(threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x}
            reference, default_run = loaded(tvm_default)
            ours, ours_run = loaded(build(mod, board))
            runs = {"ort": lambda: session.run(None, feed), "default": default_run, "ours": ours_run}
            scale = max(1e-12, float(np.abs(reference).max()))
            diff = float(np.abs(ours - reference).max()) / scale
            tuning = "-"
            if threads == 1 and (model in args.tune or name in args.tune):
                summary = tune([mod], board, args.database, args.trials, args.tune_kernels,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
                with tuned(args.database):
                    tuned_out, runs["tuned"] = loaded(build(mod, board))
                diff = max(diff, float(np.abs(tuned_out - reference).max()) / scale)
                tuning = (f"{summary.kernels} kernels x {args.trials} trials ({summary.trials} new trials in "
                          f"{summary.seconds:.0f} s)")
            median_ms = _side_by_side_ms(runs, args.seconds * len(runs))
            ort_ms, default_ms, ours_ms = median_ms["ort"], median_ms["default"], median_ms["ours"]
            tuned_ms = median_ms.get("tuned")
            ours_ratios.append(ours_ms / ort_ms)
            rows.append([name, "x".join(str(d) for d in shape[2:]), threads, f"{ort_ms:.2f}", f"{default_ms:.2f}",
                         f"{ours_ms:.2f}", "-" if tuned_ms is None else f"{tuned_ms:.2f}", f"{default_ms / ort_ms:.1f}",
                         f"{ours_ms / ort_ms:.2f}", "-" if tuned_ms is None else f"{tuned_ms / ort_ms:.2f}",
                         f"{diff:.1e}", tuning])
            print(f"[{i}/{len(models)}] {name} {threads} thread(s): ORT {ort_ms:.2f} ms, TVM default {default_ms:.2f}, "
                  f"ours {ours_ms:.2f}" + ("" if tuned_ms is None else f", tuned {tuned_ms:.2f}")
                  + f" ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        set_threads(1, os.cpu_count())
        text = results_header("Kernels: ONNX Runtime, TVM's default build and our schedules") + f"""
Latency in ms of one inference on this machine's CPU, all in one process on the same input, side by side: three
rounds in which each build is timed in turn (median of repeats), the table giving the median of the rounds. ORT: ONNX Runtime {ort.__version__} (CPUExecutionProvider, intra-op threads = threads). TVM default:
`tvm.compile(mod, target)` (TVM {tvm.__version__}, no schedules for conv/dense on CPU). Ours: the pipeline `mnova
compile` uses (fusion, BTSearch order, arena memory plan, mnova_tvm.kernels default schedules); ours tuned: the same
with the MetaSchedule records of `mnova tune` (the N heaviest kernels, each starting from its default schedule, which
stays when no candidate beats it). Target: this CPU (`-mcpu {_host_board(1).target["mcpu"]}`), num-cores = threads.
The last column but one compares our output with TVM's default build (max |diff| / max |output|).
Ours within 2x of ONNX Runtime: {sum(r <= 2.0 for r in ours_ratios)} of {len(rows)} rows.

""" + markdown_table(header, rows)
        with atomic_path(args.out) as tmp:  # rewritten after every model: partial results survive
            tmp.write_text(text)
    print(text)
    return 0


def _predicted(result) -> str:
    return f"{1e3 * result.latency_s:.1f}" + ("" if result.feasible else " (over budget)")


def run_planners(args) -> int:
    """Search quality alone: every planner under one cost model, so differences are the search's."""
    import statistics

    from ..costmodel import CostModel
    from ..errors import MnovaError
    from ..geneflow import GAConfig
    from ..partition import device_memory, single_device_plan
    from ..pipeline import default_cost_model_path
    from ..planners import PlanEvaluator, plan_with, random_search
    from ..runtime import prepare
    from ..targets import load_cluster

    base = load_cluster(args.cluster)
    cost_model_path = args.cost_model or default_cost_model_path(base)
    cost_model = CostModel.load(cost_model_path)
    fractions = _fractions(args.budget_fractions, base)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise MnovaError(f"--seeds must be integers separated by commas, not {args.seeds!r}") from None
    models = args.models or list(zoo.MODELS)
    header = ["model", "budgets MiB", "seed", "GenEFlow ms", "random ms", "GenEFlow / random", "best baseline ms",
              "evaluations", "GenEFlow s", "random s"]
    rows, ratios = [], []
    for i, model in enumerate(models, 1):
        mod = prepare(load_model(model))
        name = model_name(model)
        graph = from_relax(mod, name)
        need = device_memory(graph, single_device_plan(graph, ["d"], 0))[0]
        cluster = _budgeted(base, need, fractions)
        order = btsearch(graph, 10.0).order
        evaluator = PlanEvaluator(graph, cluster, order, cost_model)
        baselines = [plan_with(s, evaluator) for s in ("single", "height", "channel", "greedy")]
        feasible = [b for b in baselines if b.score.feasible]
        best_baseline = min(feasible, key=lambda b: b.score.latency_s) if feasible else None
        for seed in seeds:
            ga = plan_with("geneflow", evaluator, GAConfig(generations=args.generations, seed=seed))
            started = time.perf_counter()
            random_plan = random_search(evaluator, ga.evaluations, seed=seed)
            random_seconds = time.perf_counter() - started
            random_score = evaluator.score(random_plan)
            ratio = ga.score.latency_s / random_score.latency_s
            if ga.score.feasible and random_score.feasible:
                ratios.append(ratio)
            rows.append([name, "/".join(f"{d.memory_budget_bytes / 2**20:.1f}" for d in cluster.devices), seed,
                         _predicted(ga.score), _predicted(random_score), f"{ratio:.3f}",
                         f"{1e3 * best_baseline.score.latency_s:.1f} ({best_baseline.name})" if best_baseline else "none fits",
                         ga.evaluations, f"{ga.seconds:.1f}", f"{random_seconds:.1f}"])
            print(f"[{i}/{len(models)}] {name} seed {seed}: GenEFlow {rows[-1][3]} ms, random {rows[-1][4]} ms "
                  f"({ratio:.3f}), {ga.evaluations} evaluations", file=sys.stderr, flush=True)
        wins = sum(r < 1 for r in ratios)
        text = results_header("Planners: GenEFlow against random search, predicted") + f"""
Search quality alone: every planner scores plans with the same XGBoost cost model
(`{cost_model_path}`, trained on this machine's profile of cluster `{base.name}`),
nothing is compiled or run. Budgets are fractions {args.budget_fractions} of each model's single-device need; BTSearch
order. GenEFlow: {args.generations} generations, population 48, seeded with the baselines; random search draws as many
plans as GenEFlow evaluated, with the same seed. Best baseline: the fastest of best single device, every layer by height
or by channel in proportion to device speed, and per-operator greedy, among those within budget.
Where both fit: GenEFlow better than random search in {wins} of {len(ratios)} runs; median GenEFlow / random
{statistics.median(ratios) if ratios else float("nan"):.3f}.

""" + markdown_table(header, rows)
        with atomic_path(args.out) as tmp:  # rewritten after every model: partial results survive
            tmp.write_text(text)
    print(text)
    return 0


def _mean_metrics(runs: list[dict]) -> dict:
    return {key: sum(r[key] for r in runs) / len(runs) for key in ("mape_percent", "within_10_percent", "spearman")}


_PREDICTORS = ("XGBoost over the roofline line", "roofline line alone")
_STABILITY = {"XGBoost, slices whose rounds agree within ±10 %": True,
              "XGBoost, slices whose rounds disagree": False}
# Slices timed in three rounds or more (`mnova profile --tiebreak`) whose median a majority of
# rounds agreeing within ±10 % settles, with those whose two rounds agree: the truth the host reproduces.
_SETTLED = "XGBoost, slices a majority of whose rounds agree within ±10 %"
# Slices timed with the reference kernels (profile.REFERENCES), predicted for the host's state they
# read and at its median state: how much of the error is the host's spells.
_HOST_STATE = ("XGBoost, slices timed with the reference kernels", "the same slices, the host at its median state")


# Shares of each split's training shapes the held-out model is also fitted on (the test shapes
# unchanged): how the accuracy grows with the shapes profiled, and so what profiling more would buy.
CURVE_FRACTIONS = (0.25, 0.5, 0.75)


_SOURCES = {"blocks": "block sweeps (--sweep)", "branches": "branch sweeps (--sweep-kind branches)",
            "pools": "pool sweeps (--sweep-kind pools)"}


def _source(model: str) -> str:
    """Where a profiled model comes from: the zoo, a sweep of either kind, or elsewhere."""
    return "zoo models" if model in zoo.MODELS else _SOURCES.get(zoo.sweep_kind(model), "other models")


def _latency_band(row) -> float:
    """The half decade of seconds a slice's latency falls in (its lower end's log10)."""
    return math.floor(2 * math.log10(float(row["latency_s"]))) / 2


def _seconds_text(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _operator_rows(rows, splits: int, test_fraction: float, also=()) -> tuple[list[list], list[list], list[list], list[list], dict]:
    """Per device kind: the cost model and its roofline line alone on held-out operator shapes,
    averaged over `splits` seeded splits; for slices profiled in several rounds, the model apart
    on those whose rounds agreed and those whose did not (a slice the host times unsteadily).
    Also the model's share within ±10 % per operator and per source of the slices (_source), and
    the learning curve: (training shapes, share within ±10 %) fitted on CURVE_FRACTIONS of each
    split's training shapes, then all of them. And per half decade of latency, the model's share
    beside how often the rounds of those slices agree: a second run of the profiler as a predictor.
    Each split also trains on the rows `also` (another dataset's) of shapes it does not hold out."""
    from collections import defaultdict

    from ..costmodel import HOST_COLUMNS, CostModel, evaluate, shape_keys, split_by_shape
    from ..profile import ROUNDS_AGREE, row_key

    table, operators, sources, latencies, curves = [], [], [], [], {}
    for kind in sorted({r["device_kind"] for r in rows}):
        kind_rows = [r for r in rows if r["device_kind"] == kind]
        kind_also = [r for r in also if r["device_kind"] == kind]
        also_keys = list(zip(shape_keys(kind_also), map(row_key, kind_also)))
        runs: dict[str, list[dict]] = {label: [] for label in (*_PREDICTORS, *_STABILITY, _SETTLED, *_HOST_STATE)}
        held: dict[str, int] = dict.fromkeys(runs, 0)
        curve: dict[float, list[tuple[int, float]]] = {f: [] for f in (*CURVE_FRACTIONS, 1.0)}
        by_op: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # operator -> held-out rows, within ±10 %
        by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        by_latency: dict[float, list[int]] = defaultdict(lambda: [0, 0])
        for seed in range(splits):
            train_rows, test_rows = split_by_shape(kind_rows, test_fraction, seed)
            if not train_rows or not test_rows:
                continue
            held_shapes, held_slices = set(shape_keys(test_rows)), set(map(row_key, test_rows))
            train_rows = train_rows + [r for r, (shape, sliced) in zip(kind_also, also_keys)
                                       if shape not in held_shapes and sliced not in held_slices]
            model = CostModel().fit(train_rows)
            metrics = evaluate(model, test_rows, group=lambda row: _source(row["model"]))
            banded = evaluate(model, test_rows, group=_latency_band)["by_group"]
            for counts, groups in ((by_op, metrics["by_operator"]), (by_source, metrics["by_group"]), (by_latency, banded)):
                for name, (count, within) in groups.items():
                    counts[name][0] += count
                    counts[name][1] += within
            curve[1.0].append((len(set(shape_keys(train_rows))), metrics["within_10_percent"]))
            for fraction in CURVE_FRACTIONS:
                part = split_by_shape(train_rows, 1 - fraction, seed)[0]
                curve[fraction].append((len(set(shape_keys(part))),
                                        evaluate(CostModel().fit(part), test_rows)["within_10_percent"]))
            subsets = {_PREDICTORS[0]: (metrics, test_rows), _PREDICTORS[1]: (metrics["roofline"], test_rows)}
            for label, agree in _STABILITY.items():  # slices timed in several rounds, by whether those agreed
                subset = [r for r in test_rows if r.get("rounds", 1) > 1 and (r["spread"] <= 1 + ROUNDS_AGREE) == agree]
                if len(subset) > 1:
                    subsets[label] = (evaluate(model, subset), subset)
            settled = [r for r in test_rows if r.get("settled")]
            if any(r["rounds"] > 2 for r in settled) and len(settled) > 1:
                subsets[_SETTLED] = (evaluate(model, settled), settled)
            timed_with_references = [r for r in test_rows if all(name in r for name in HOST_COLUMNS)]
            if len(timed_with_references) > 1:
                for label, host in zip(_HOST_STATE, (True, False)):
                    subsets[label] = (evaluate(model, timed_with_references, host=host), timed_with_references)
            for label, (m, subset) in subsets.items():
                runs[label].append(m)
                held[label] += len(subset)
        shown = [label for label in runs if runs[label]]
        if not shown:
            continue
        for label in shown:
            m = _mean_metrics(runs[label])
            table.append([kind, len(set(shape_keys(kind_rows))), len(kind_rows), held[label] // len(runs[label]),
                          label, f"{m['mape_percent']:.1f}", f"{100 * m['within_10_percent']:.1f}",
                          f"{m['spearman']:.3f}"])
        operators += [[kind, op, count // len(runs[_PREDICTORS[0]]), f"{100 * within / count:.1f}"]
                      for op, (count, within) in sorted(by_op.items(), key=lambda item: -item[1][0])]
        sources += [[kind, source, count // len(runs[_PREDICTORS[0]]), f"{100 * within / count:.1f}"]
                    for source, (count, within) in sorted(by_source.items())]
        rounds_agree: dict[float, list[bool]] = defaultdict(list)
        for row in kind_rows:
            if row.get("rounds", 1) > 1:
                rounds_agree[_latency_band(row)].append(row["spread"] <= 1 + ROUNDS_AGREE)
        latencies += [[kind, f"{_seconds_text(10 ** band)} – {_seconds_text(10 ** (band + 0.5))}",
                       count // len(runs[_PREDICTORS[0]]), f"{100 * within / count:.1f}",
                       f"{100 * sum(rounds_agree[band]) / len(rounds_agree[band]):.1f}" if rounds_agree[band] else "-"]
                      for band, (count, within) in sorted(by_latency.items()) if count >= len(runs[_PREDICTORS[0]])]
        curves[kind] = [(sum(n for n, _ in points) / len(points), sum(s for _, s in points) / len(points))
                        for points in curve.values() if points]
        ours = _mean_metrics(runs[_PREDICTORS[0]])
        print(f"{kind}: held-out within ±10 % {100 * ours['within_10_percent']:.1f} %, Spearman {ours['spearman']:.3f}",
              file=sys.stderr, flush=True)
    return table, operators, sources, latencies, curves


def _curve_table(curves: dict[str, list[tuple]]) -> list[list]:
    """Rows of the learning curve, with the points gained per doubling of the training shapes
    (a least-squares line in log2 of the shapes)."""
    import numpy as np

    table = []
    for kind, points in curves.items():
        shapes, shares = (np.array(v, dtype=float) for v in zip(*points))
        slope = np.polyfit(np.log2(shapes), 100 * shares, 1)[0] if len(points) > 1 else float("nan")
        table += [[kind, f"{n:.0f}", f"{100 * share:.1f}", f"{slope:+.1f}"] for n, share in points]
    return table


def _remeasured_rows(cluster, state, rows, modules: dict, workdir: Path, count: int) -> list[list]:
    """Time `count` profiled slices of each device kind again, of the first profiled model among
    `modules` (name -> prepared module): how often a second measurement agrees with the dataset's
    is the ceiling of any model's share within ±10 %."""
    import numpy as np

    from ..costmodel import accuracy
    from ..profile import Job, device_kind, profile_devices, read_dataset, timing_of

    table = []
    if count < 1:
        return table
    for device in {device_kind(d): d for d in reversed(cluster.devices)}.values():
        kind = device_kind(device)
        model = next((r["model"] for r in rows if r["device_kind"] == kind and r["model"] in modules), None)
        if model is None:
            continue
        sample = [r for r in rows if r["device_kind"] == kind and r["model"] == model]
        sample = [sample[i] for i in np.random.default_rng(0).permutation(len(sample))[:count]]
        mod = modules[model]
        again = workdir / f"again-{kind.replace('@', '-')}.jsonl"
        profile_devices(state, [device], mod, from_relax(mod, model), model, again, workdir, timing_of(sample[0]),
                        jobs=[Job(r["node"], r["dim"], int(r["units"]), int(r["total_units"])) for r in sample],
                        log=lambda *_: None)
        first = {(r["node"], r["dim"], int(r["units"])): float(r["latency_s"]) for r in sample}
        second = [(first[(r["node"], r["dim"], int(r["units"]))], float(r["latency_s"])) for r in read_dataset(again)[0]]
        truth, fresh = np.array(second).T
        m = accuracy(fresh, truth)
        table.append([kind, model, m["rows"], f"{m['mape_percent']:.1f}", f"{100 * m['within_10_percent']:.1f}",
                      f"{m['spearman']:.3f}"])
        print(f"{kind}: a second measurement within ±10 % of the first in {table[-1][4]} %", file=sys.stderr, flush=True)
    return table


def _calibration_without(factors: dict, model: str) -> dict:
    """Per device kind, the median calibration factor of the models other than `model` (all of
    them when it is the only one): a plan is not predicted with its own model's whole-run time."""
    import statistics

    others = [f for name, f in factors.items() if name != model] or list(factors.values())
    kinds = {kind for f in others for kind in f}
    return {kind: statistics.median(f[kind] for f in others if kind in f) for kind in sorted(kinds)}


def _calibration_text(factors: dict) -> str:
    from ..profile import CALIBRATION_GAP_S, CALIBRATION_RUNS

    measured = ", ".join(f"{name} " + "/".join(f"{f:.2f}" for _, f in sorted(kinds.items()))
                         for name, kinds in factors.items())
    how = "the median factor of the other models'" if len(factors) > 1 else "the factor of"
    return (f"{how} whole-model runs (each the median of {CALIBRATION_RUNS} runs {CALIBRATION_GAP_S:g} s apart, over "
            f"the sum of its operators' predictions; measured: {measured})")


def _round_agreement(timings) -> str:
    """How often a slice's second round reproduced its first: the noise between profiling runs.
    And what that noise leaves to any model: a predictor that knew each slice's mean latency
    would miss a round by the rounds' log ratio over √2 (the ratio of two rounds has twice the
    variance of one round) and the median of two rounds by it over 2, either way round."""
    import numpy as np

    from ..profile import row_key

    first, ratios = {}, {}
    for row in timings:
        key = (row["device_kind"], row_key(row))
        if key not in first:
            first[key] = float(row["latency_s"])
        elif key not in ratios:
            ratios[key] = float(row["latency_s"]) / first[key]
    within = sum(abs(r - 1) <= 0.1 for r in ratios.values()) / len(ratios)
    log_ratios = np.abs(np.log(np.array(list(ratios.values()))))

    def knowing_the_mean(scale: float) -> float:
        error = log_ratios / scale
        return float(np.mean([np.abs(np.exp(error) - 1) <= 0.1, np.abs(np.exp(-error) - 1) <= 0.1]))

    return (f"a second round within ±10 % of the first in {100 * within:.1f} % of {len(ratios)} slices; a predictor"
            f" that knew each slice's mean latency would be within ±10 % of one round in about"
            f" {100 * knowing_the_mean(math.sqrt(2)):.1f} % and of the median of two in about"
            f" {100 * knowing_the_mean(2):.1f} % (estimated from the two rounds' spread)")


def _timing_text(timing) -> str:
    runs = (f"the median of {timing.repeats} repeats" if timing.repeats > 1 else "one run") + \
        f" of at least {timing.min_repeat_ms} ms"
    if timing.passes == 1:
        return runs
    statistic = "fastest" if timing.statistic == "min" else "median"
    return f"the {statistic} of {timing.passes} passes seconds apart, each {runs}"


PREDICT_BATCH = 5000


def _predict_rate(rows) -> list[list]:
    """Per device kind: predictions per second of the model fitted on all of `rows`, predicting
    them in batches of PREDICT_BATCH on one thread as the planner does (median of 5 passes)."""
    import statistics
    import time

    import numpy as np

    from ..costmodel import FEATURES, CostModel

    table = []
    for kind in sorted({r["device_kind"] for r in rows}):
        kind_rows = [r for r in rows if r["device_kind"] == kind]
        model = CostModel().fit(kind_rows)
        features = np.array([[float(r[f]) for f in FEATURES] for r in kind_rows])
        passes = []
        for _ in range(5):
            started = time.perf_counter()
            for batch in np.array_split(features, range(PREDICT_BATCH, len(features), PREDICT_BATCH)):
                model.predict(batch, [kind] * len(batch))
            passes.append(time.perf_counter() - started)
        table.append([kind, len(features), PREDICT_BATCH, f"{len(features) / statistics.median(passes):,.0f}"])
    return table


def run_costmodel(args) -> int:
    """How good the latency predictions are: per operator on shapes the model never saw, and
    per plan against the same plan measured on the cluster."""
    import statistics
    import tempfile
    from collections import Counter

    from .. import cluster as testbed
    from ..costmodel import plan_latency
    from ..deploy import coordinator_latencies, run_plan
    from ..errors import MnovaError
    from ..frontend import random_inputs
    from ..geneflow import GAConfig
    from ..partition import segments
    from ..planners import PlanEvaluator, plan_with
    from ..profile import (CALIBRATION_GAP_S, calibration_factors, cost_model_for, device_kind, job_key,
                           jobs_for, merge_rounds, read_dataset, row_key, timing_of)
    from ..runtime import prepare
    from ..targets import load_cluster

    dataset = Path(args.dataset)
    timings = read_dataset(dataset)[0]
    rows = merge_rounds(timings)
    if not rows:
        raise MnovaError(f"dataset {dataset} has no operator rows: run mnova profile first")
    if args.splits < 1 or not 0 < args.test_fraction < 1 or args.remeasure < 0:
        raise MnovaError("--splits must be at least 1, --test-fraction between 0 and 1 and --remeasure at least 0")
    if args.train_also and not Path(args.train_also).is_file():
        raise MnovaError(f"--train-also {args.train_also}: no such dataset file")
    also = merge_rounds(read_dataset(args.train_also)[0]) if args.train_also else []
    if args.train_also and not also:
        raise MnovaError(f"dataset {args.train_also} has no operator rows: run mnova profile first")
    operator_table, per_operator, per_source, per_latency, curves = _operator_rows(rows, args.splits, args.test_fraction,
                                                                                   also)
    predict_rate = _predict_rate(rows)
    curve_png = Path(args.out).with_name(Path(args.out).stem + "-curve.png")
    plot_learning_curve(curves, curve_png, f"{dataset.name}: held-out operator shapes")
    timing_text = "; ".join(f"{n} as {_timing_text(t)}" for t, n in Counter(timing_of(r) for r in rows).most_common())
    rounds = Counter(r["rounds"] for r in rows)
    if set(rounds) != {1}:
        timing_text += "; " + ", ".join(f"{n} the median of {k} rounds" if k > 1 else f"{n} in one round"
                                        for k, n in sorted(rounds.items(), reverse=True))
        timing_text += f" (a round: one mnova profile run, rounds hours apart; {_round_agreement(timings)})"
    noise_table, plan_table, errors, calibration_text = [], [], [], None
    cluster = load_cluster(args.cluster) if args.cluster else None
    kinds = {device_kind(d) for d in cluster.devices} if cluster else set()
    strategies = [s for s in args.plans.split(",") if s]

    also_text = (f" Every split also trains on the {len(also)} slices of `{args.train_also}`, but for those of the"
                 f" split's held-out shapes." if also else "")

    def write() -> str:
        text = results_header("Cost model: predicted against measured latency") + f"""
Dataset `{dataset}`: {len(rows)} operator slices (every operator of the profiled models whole and sliced at 25/50/75 %
of its rows or channels, timed over TVM RPC: {timing_text}). Held out: {args.splits} seeded
splits in which {100 * args.test_fraction:.0f} % of the operator shapes (every operator of that shape in any model, all
their slices) are left out of training; the table gives the mean over the splits.{also_text} The roofline line alone is the model's own baseline
(seconds per call, per FLOP, per byte moved, per weight byte) without the trees.

## Operators on held-out shapes

""" + markdown_table(["device kind", "operator shapes", "slices", "held out per split", "predictor", "MAPE %",
                      "within ±10 % (%)", "Spearman"], operator_table) + """
### By operator

""" + markdown_table(["device kind", "operator", "held out per split", "within ±10 % (%)"], per_operator) + """
### By source

Where each held-out slice was profiled (the first model profiled with its shape): the zoo's models, or a sweep
of shapes made for profiling.

""" + markdown_table(["device kind", "source", "held out per split", "within ±10 % (%)"], per_source) + """
### By latency

The held-out slices by their measured latency, and of all the dataset's slices of that latency timed in two rounds
or more, the share whose rounds agree within ±10 %: how well a second run of the profiler predicts the first.

""" + markdown_table(["device kind", "latency", "held out per split", "within ±10 % (%)", "rounds agree within ±10 % (%)"],
                     per_latency) + f"""
### By the operator shapes trained on

The same splits, the model fitted on {", ".join(f"{100 * f:.0f}" for f in CURVE_FRACTIONS)} % of each split's training
shapes (a seeded choice; the held-out shapes unchanged) and on all of them: what profiling more shapes buys.
Per doubling: the slope of a line through the shares in log2 of the shapes. ![learning curve]({curve_png.name})

""" + markdown_table(["device kind", "training shapes", "within ±10 % (%)", "points per doubling"], _curve_table(curves)) + """
### Batched predict

The model fitted on every slice predicting all of them again, in batches on one thread as the planner calls it
(median of 5 passes); the planner also keeps each prediction by its slice, so a plan search asks for each slice once.

""" + markdown_table(["device kind", "slices", "batch", "predictions per second"], predict_rate)
        if noise_table:
            text += """
## Noise floor: the same slices timed again

The profiled slices of one model timed a second time on the same device, as `mnova profile` timed them, and compared
with the dataset: no predictor can agree with the dataset more often than a second measurement does.

""" + markdown_table(["device kind", "model", "slices", "MAPE %", "within ±10 % (%)", "Spearman"], noise_table)
        if plan_table:
            text += f"""
## Plans on cluster `{cluster.name}`

Each plan predicted by the cost model fitted on the whole dataset (with the cluster's links, and each device kind
calibrated by {calibration_text}), then compiled, deployed and run over TVM RPC: median of
{args.repeat} runs {CALIBRATION_GAP_S:g} s apart after a warm-up, output checked against single-device TVM. Error: predicted / measured - 1.
Within 15 %: {sum(abs(e) <= 0.15 for e in errors)} of {len(errors)} plans; median |error|
{100 * statistics.median(abs(e) for e in errors) if errors else float("nan"):.1f} %.
Profiled: the share of the model's operator slices whose shape (operator and features) the dataset holds for the
cluster's device kinds, from this model or another; at 0 % every prediction is of shapes the cost model never saw.
Compute and wire: the devices' time in their segments' calls and in sending inputs and receiving outputs
(with the link latency), summed over the devices, predicted / measured (per inference, median run); a measured
call also holds its RPC round trips, which are predicted under wire with the coordinator's time around each segment
(threads, joining outputs; not in the measured columns).

""" + markdown_table(["model", "profiled %", "plan", "segments", "predicted ms", "measured ms", "error %", "output",
                      "compute ms", "wire ms"], plan_table)
        with atomic_path(args.out) as tmp:  # rewritten after every model: partial results survive
            tmp.write_text(text)
        return text

    text = write()
    if cluster is not None:
        models = args.models or list(zoo.MODELS)
        loaded = [(model_name(m), prepare(load_model(m))) for m in models]
        with tempfile.TemporaryDirectory(prefix="mnova-bench-") as workdir, testbed.LocalCluster(cluster) as state:
            workdir = Path(workdir)
            noise_table = _remeasured_rows(cluster, state, rows, dict(loaded), workdir, args.remeasure)
            cost_model = cost_model_for(cluster, state, loaded[:1], dataset.with_suffix(".json"), workdir)
            factors = {loaded[0][0]: dict(cost_model.calibration)}
            for name, mod in loaded[1:]:
                factors[name] = calibration_factors(cost_model, cluster, state, mod, name, workdir, log=lambda *_: None)
            calibration_text = _calibration_text(factors)
            profiled = {(r["device_kind"], row_key(r)) for r in read_dataset(dataset)[0] if r["device_kind"] in kinds}
            latencies = coordinator_latencies(cluster, state)
            for i, (name, mod) in enumerate(loaded, 1):
                graph = from_relax(mod, name)
                cost_model.calibration = _calibration_without(factors, name)
                evaluator = PlanEvaluator(graph, cluster, btsearch(graph, 10.0).order, cost_model, latencies)
                inputs = random_inputs(mod)
                keys = [job_key(graph, job) for job in jobs_for(graph)]
                share = f"{100 * sum((k, key) in profiled for k in kinds for key in keys) / (len(keys) * len(kinds)):.0f}"
                for strategy in strategies:
                    planned = plan_with(strategy, evaluator, GAConfig(generations=args.generations))
                    head = [name, share, planned.name, len(segments(graph, planned.plan)),
                            f"{1e3 * planned.score.latency_s:.2f}"]
                    try:
                        run = run_plan(mod, graph, planned.plan, cluster, state, inputs,
                                       workdir / f"{name}-{strategy.replace(':', '-')}", name, args.repeat,
                                       log=lambda *_: None, gap_s=CALIBRATION_GAP_S)
                    except MnovaError as err:  # one plan's failure is a row of the results
                        plan_table.append(head + [f"failed: {err}", "-", "-", "-", "-"])
                        continue
                    error = 1e3 * planned.score.latency_s / run.median_ms - 1
                    errors.append(error)
                    estimate = plan_latency(cost_model, graph, planned.plan, evaluator.kinds, latencies)
                    plan_table.append(head + [
                        f"{run.median_ms:.2f}", f"{100 * error:+.1f}", "ok" if run.matches else "WRONG",
                        f"{1e3 * sum(estimate.device_compute_s):.2f} / {sum(d.compute_ms for d in run.devices):.2f}",
                        f"{1e3 * sum(estimate.device_wire_s):.2f} / {sum(d.wire_ms for d in run.devices):.2f}"])
                    print(f"[{i}/{len(loaded)}] {name} {planned.name}: predicted {plan_table[-1][4]} ms, "
                          f"measured {plan_table[-1][5]} ms", file=sys.stderr, flush=True)
                text = write()
    print(text)
    return 0
