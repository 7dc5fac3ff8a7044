"""`mnova profile --cluster FILE`: time operator slices and links on every device kind over RPC."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import cluster as testbed
from ..errors import MnovaError
from ..frontend import load_model
from ..profile import profile_cluster
from ..targets import load_cluster
from ..zoo import MODELS, SWEEPS
from .model_args import add_tuned_argument

DEFAULT_DATASET = Path.home() / ".cache" / "mnova" / "profile.jsonl"


def register(sub) -> None:
    parser = sub.add_parser("profile", help="time operator slices and links on each device kind (appends to a dataset)")
    parser.add_argument("--cluster", required=True, help="cluster JSON (or a name under targets/clusters/)")
    parser.add_argument("--models", nargs="+", default=["squeezenet1_1", "mobilenet_v2", "resnet18"],
                        help="zoo names or ONNX files (default: squeezenet1_1 mobilenet_v2 resnet18)")
    parser.add_argument("--input-size", type=int, default=None, help="input size for zoo models (default: standard)")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help=f"JSON Lines dataset (default {DEFAULT_DATASET})")
    parser.add_argument("--budget-min", type=float, default=None, help="stop after this many minutes (rerun resumes)")
    parser.add_argument("--sweep", type=int, default=0, metavar="BLOCKS",
                        help="also profile BLOCKS random CNN blocks (zoo.shape_sweep): operator shapes the zoo lacks, "
                             "from which the cost model learns shapes it has not seen (40 blocks: about 1,000 slices)")
    parser.add_argument("--sweep-seed", type=int, default=0, metavar="SEED",
                        help="seed of the sweep's random blocks (default 0); another seed profiles other shapes")
    parser.add_argument("--sweep-kind", choices=tuple(SWEEPS), default="blocks",
                        help="blocks: a CNN of random blocks (zoo.shape_sweep); branches: side branches of the operators "
                             "a CNN has few of, strided convs, pools, global means, classifiers, many-input concatenations "
                             "(zoo.branch_sweep); pools: max and average pools of every kind, each with its global mean "
                             "(zoo.pool_sweep) (default blocks)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="time again each slice the dataset holds fewer than N timings of, once per run: rerun "
                             "hours apart for N rounds; the cost model takes each slice's median (default 1)")
    parser.add_argument("--tiebreak", action="store_true",
                        help="with --rounds N (N >= 2): also time once more each slice whose N timings differ by "
                             "more than 10 %%, so that its median is settled by a majority")
    parser.add_argument("--no-links", action="store_true", help="skip the link measurements")
    parser.add_argument("--state", default=None, help="cluster state directory (as for mnova cluster)")
    add_tuned_argument(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    cluster = load_cluster(args.cluster)
    if args.budget_min is not None and args.budget_min <= 0:
        raise MnovaError("--budget-min must be positive")
    if args.rounds < 1:
        raise MnovaError("--rounds must be at least 1")
    if args.tiebreak and args.rounds < 2:
        raise MnovaError("--tiebreak settles disagreeing rounds: give --rounds 2 or more")
    models = []
    for name in args.models:
        size = args.input_size if name in MODELS else None
        models.append((Path(name).stem, load_model(name, input_size=size)))
    if args.sweep:
        sweep = SWEEPS[args.sweep_kind](args.sweep, seed=args.sweep_seed)
        models.append((sweep.graph.name, load_model(sweep)))
    state_dir = Path(args.state) if args.state else None
    with tempfile.TemporaryDirectory(prefix="mnova-profile-") as workdir, \
            testbed.LocalCluster(cluster, state_dir) as state:
        written = profile_cluster(cluster, state, models, Path(args.dataset), Path(workdir),
                                  None if args.budget_min is None else 60 * args.budget_min, not args.no_links,
                                  rounds=args.rounds, tiebreak=args.tiebreak)
    print(f"{written} rows appended to {args.dataset}")
    return 0
