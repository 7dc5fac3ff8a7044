"""`mnova demo`: the whole main job on the embedded default, with the cluster started and stopped.

SqueezeNet 1.1 on `demo4`, four emulated devices of different speeds behind Wi-Fi-like links
whose memory budgets are each too small for the whole model: BTSearch, a quick profile and the
XGBoost cost model, GenEFlow and its baselines, each plan compiled, deployed over TVM RPC, run,
checked against one device and measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import cluster as testbed
from ..frontend import load_model
from ..geneflow import GAConfig
from ..pipeline import main_job
from ..report import plot_convergence, plot_run
from ..targets import load_cluster
from ._io import write_json
from .plan import planner_table
from .run import measured_table, print_report


def register(sub) -> None:
    parser = sub.add_parser("demo", help="run the whole pipeline on a built-in model and local emulated cluster")
    parser.add_argument("--model", default="squeezenet1_1", help="zoo model or ONNX file (default squeezenet1_1)")
    parser.add_argument("--input-size", type=int, default=None, help="input size for a zoo model")
    parser.add_argument("--cluster", default="demo4", help="cluster (default demo4, started and stopped here)")
    parser.add_argument("--out", default="mnova-demo", help="folder for plan, report and plots (default mnova-demo)")
    parser.add_argument("--generations", type=int, default=40, help="GenEFlow generations (default 40)")
    parser.add_argument("--repeat", type=int, default=3, help="timed inferences per plan (default 3)")
    parser.add_argument("--plain", action="store_true", help="no emulation (plain loopback servers)")
    parser.set_defaults(func=run)


def run(args) -> int:
    cluster = load_cluster(args.cluster)
    name = Path(args.model).stem
    mod = load_model(args.model, input_size=args.input_size)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="mnova-demo-") as workdir, \
            testbed.LocalCluster(cluster, emulate=False if args.plain else None) as state:
        job = main_job(name, mod, cluster, state, Path(workdir), compare=True,
                       measure=("geneflow", "single", "height", "channel", "greedy", "random"),
                       ga_config=GAConfig(generations=args.generations), repeat=args.repeat)
    print("\n".join(planner_table(job.planners)))
    ga = job.runs["geneflow"]
    print("--- GenEFlow plan, measured")
    print_report(ga)
    print("\n".join(measured_table(job)))
    out.mkdir(parents=True, exist_ok=True)
    from ..graph import from_relax
    from ..runtime import prepare

    job.geneflow.plan.save(out / "plan.json", from_relax(prepare(mod)))
    write_json(out / "report.json", {label: r.to_json() for label, r in job.runs.items()})
    plot_run(ga, out / "timeline.png")
    plot_convergence(job.geneflow.history, {p.name: p.score.latency_s for p in job.planners[1:] if p.score.feasible},
                     out / "convergence.png", f"GenEFlow on {name}, cluster {cluster.name}")
    print(f"plan, report and plots (timeline.png, convergence.png) written to {out}/")
    return 0 if all(r.matches for r in job.runs.values()) else 1
