"""`mnova run MODEL --cluster FILE [--plan PLAN]`: deploy over TVM RPC, run, check, report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import cluster as testbed
from .. import frontend
from ..deploy import run_plan
from ..errors import MnovaError
from ..geneflow import GAConfig
from ..pipeline import main_job
from ..graph import from_relax
from ..partition import Plan
from ..report import mib, plot_run
from ..runtime import prepare
from ..targets import load_cluster
from ._io import atomic_path, write_json
from .plan import planner_table
from .model_args import add_model_arguments, add_tuned_argument, load_from_args


def register(sub) -> None:
    parser = sub.add_parser("run", help="run a model across a cluster over TVM RPC and check it against one device")
    add_model_arguments(parser)
    parser.add_argument("--cluster", required=True, help="cluster JSON (or a name under targets/clusters/)")
    parser.add_argument("--plan", help="Plan JSON (mnova plan); without it GenEFlow plans for the cluster")
    parser.add_argument("--input", metavar="X.npy", help="input array (default: seeded random input)")
    parser.add_argument("--output", metavar="Y.npy", help="write the (first) output here")
    parser.add_argument("--repeat", type=int, default=5, help="timed inferences after one warm-up (default 5)")
    parser.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="timeline of one inference and memory per device")
    parser.add_argument("--cost-model", default=None, help="cost model for planning (default: the cluster's; profiled if missing)")
    parser.add_argument("--compare", action="store_true", help="also plan and run the baselines (single device, height, channel, greedy, random)")
    parser.add_argument("--generations", type=int, default=60, help="GenEFlow generations (default 60)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a device may take per segment")
    parser.add_argument("--state", default=None, help="cluster state directory (as for mnova cluster)")
    parser.add_argument("--plain", action="store_true", help="if the command starts the cluster, do not emulate")
    add_tuned_argument(parser)
    parser.set_defaults(func=run)


def _inputs(args, mod) -> list[np.ndarray]:
    specs = frontend.input_specs(mod)
    if not args.input:
        return frontend.random_inputs(mod)
    if len(specs) != 1:
        raise MnovaError(f"the model has {len(specs)} inputs; --input takes one .npy for single-input models")
    try:
        x = np.load(args.input)
    except FileNotFoundError:
        raise MnovaError(f"input file {args.input} does not exist") from None
    except (ValueError, OSError) as err:
        raise MnovaError(f"input file {args.input} is not a .npy array ({err})") from None
    name, shape, dtype = specs[0]
    if tuple(x.shape) != shape:
        raise MnovaError(f"input {args.input} has shape {tuple(x.shape)}, the model's {name} needs {shape}")
    return [x.astype(dtype)]


def print_report(report) -> None:
    check = "matches" if report.matches else "DOES NOT MATCH"
    print(f"output {check} single-device TVM (max |diff| {report.max_abs_diff:.2e}; rtol 1e-5, atol 1e-5 of the largest output)")
    print(f"end-to-end latency: median {report.median_ms:.1f} ms over {len(report.latencies_ms)} runs "
          f"(reference: TVM default build, one device, no limits: {report.reference_ms:.1f} ms)")
    print(f"{'device':8s} {'board':16s} {'segs':>4s} {'compute ms':>10s} {'wire ms':>8s} {'sent MiB':>8s} "
          f"{'recv MiB':>8s} {'planned MiB':>11s} {'peak-idle MiB':>13s} {'budget MiB':>10s}")
    for d in report.devices:
        measured = "-" if d.peak_bytes is None or d.idle_bytes is None else mib(d.peak_bytes - d.idle_bytes)
        print(f"{d.name:8s} {d.board:16s} {d.segments:4d} {d.compute_ms:10.1f} {d.wire_ms:8.1f} {mib(d.sent_bytes):>8s} "
              f"{mib(d.received_bytes):>8s} {mib(d.planned_bytes):>11s} {measured:>13s} {mib(d.budget_bytes):>10s}")


def run(args) -> int:
    cluster = load_cluster(args.cluster)
    name, mod = load_from_args(args)
    mod = prepare(mod)
    graph = from_relax(mod, name)
    inputs = _inputs(args, mod)
    plan = Plan.load(args.plan, graph) if args.plan else None
    if plan is not None:
        missing = [d for d in plan.devices if d not in {dev.name for dev in cluster.devices}]
        if missing:
            raise MnovaError(f"plan devices {', '.join(missing)} are not in cluster {cluster.name}")
    state_dir = Path(args.state) if args.state else None
    with tempfile.TemporaryDirectory(prefix="mnova-run-") as workdir, \
            testbed.LocalCluster(cluster, state_dir, emulate=False if args.plain else None) as state:
        if plan is not None:
            reports = {"plan": run_plan(mod, graph, plan, cluster, state, inputs, Path(workdir), name, args.repeat, args.timeout)}
            job = None
        else:
            measure = ("geneflow", "single", "height", "channel", "greedy", "random") if args.compare else ("geneflow",)
            job = main_job(name, mod, cluster, state, Path(workdir), Path(args.cost_model) if args.cost_model else None,
                           compare=args.compare, measure=measure, ga_config=GAConfig(generations=args.generations),
                           repeat=args.repeat, inputs=inputs)
            reports = job.runs
    if job is not None:
        print("\n".join(planner_table(job.planners)))
    for label, report in reports.items():
        print(f"--- {label}")
        print_report(report)
    if job is not None and len(reports) > 1:
        print("\n".join(measured_table(job)))
    report = next(iter(reports.values()))  # the given plan, or GenEFlow's
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, report.outputs[0])
    if args.report:
        write_json(args.report, {label: r.to_json() for label, r in reports.items()} if len(reports) > 1 else report.to_json())
    if args.plot:
        plot_run(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0 if all(r.matches for r in reports.values()) else 1


def measured_table(job) -> list[str]:
    """Measured latency of every plan that ran, against the best single device that fits."""
    single = [r for label, r in job.runs.items() if label.startswith("single")]
    lines = [f"{'plan':22s} {'predicted ms':>12s} {'measured ms':>11s} {'vs single':>9s} {'output':>7s}"]
    predicted = {p.name: p.score.latency_s for p in job.planners}
    for label, r in job.runs.items():
        versus = f"{100 * (1 - r.median_ms / single[0].median_ms):+.1f}%" if single else "-"
        lines.append(f"{label:22s} {1e3 * predicted[label]:12.1f} {r.median_ms:11.1f} {versus:>9s} "
                     f"{'ok' if r.matches else 'WRONG':>7s}")
    return lines
