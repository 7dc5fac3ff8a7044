"""`mnova run MODEL --cluster FILE [--plan PLAN]`: deploy over TVM RPC, run, check, report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import cluster as testbed
from .. import frontend
from ..deploy import run_plan
from ..errors import MnovaError
from ..graph import from_relax
from ..partition import Plan
from ..report import mib, plot_run
from ..runtime import prepare
from ..targets import load_cluster
from ._io import atomic_path, write_json
from .model_args import add_model_arguments, load_from_args


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
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a device may take per segment")
    parser.add_argument("--state", default=None, help="cluster state directory (as for mnova cluster)")
    parser.add_argument("--plain", action="store_true", help="if the command starts the cluster, do not emulate")
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
    print(f"output {check} single-device TVM (max |diff| {report.max_abs_diff:.2e}, rtol 1e-5)")
    print(f"end-to-end latency: median {report.median_ms:.1f} ms over {len(report.latencies_ms)} runs "
          f"(single device on this machine, no limits: {report.reference_ms:.1f} ms)")
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
    if args.plan is None:
        raise MnovaError("give --plan PLAN.json (make one with `mnova plan`)")
    plan = Plan.load(args.plan, graph)
    missing = [d for d in plan.devices if d not in {dev.name for dev in cluster.devices}]
    if missing:
        raise MnovaError(f"plan devices {', '.join(missing)} are not in cluster {cluster.name}")
    state_dir = Path(args.state) if args.state else None
    with tempfile.TemporaryDirectory(prefix="mnova-run-") as workdir, \
            testbed.LocalCluster(cluster, state_dir, emulate=False if args.plain else None) as state:
        report = run_plan(mod, graph, plan, cluster, state, inputs, Path(workdir), name, args.repeat, args.timeout)
    print_report(report)
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, report.outputs[0])
    if args.report:
        write_json(args.report, report.to_json())
    if args.plot:
        plot_run(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0 if report.matches else 1
