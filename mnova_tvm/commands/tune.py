"""`mnova tune MODEL --database DIR`: MetaSchedule records for the kernels a board (or a plan) runs."""

from __future__ import annotations

from pathlib import Path

from ..errors import MnovaError
from ..targets import list_boards, load_board, load_cluster
from .model_args import add_model_arguments, load_from_args


def register(sub) -> None:
    parser = sub.add_parser("tune", help="tune a model's kernels per board with MetaSchedule (resumable database)")
    add_model_arguments(parser)
    parser.add_argument("--database", required=True, metavar="DIR",
                        help="tuning folder (one database per board); use it with --tuned DIR in compile, run, profile")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--board", default=None, help=f"board to tune for ({', '.join(list_boards())}; default host)")
    where.add_argument("--cluster", default=None, help="tune for every board of this cluster (its devices' kernels)")
    parser.add_argument("--plan", default=None, help="Plan JSON: tune the slices each device runs (with --cluster)")
    parser.add_argument("--rpc", action="store_true",
                        help="measure on the cluster's devices over its RPC tracker (default: on this machine)")
    parser.add_argument("--trials", type=int, default=64, help="measured candidates per kernel: the default schedule, "
                        "then its other knob settings, then MetaSchedule's search (default 64)")
    parser.add_argument("--kernels", type=int, default=None, help="tune only the N heaviest kernels (FLOPs x uses)")
    parser.set_defaults(func=run)


def _targets(args, mod):
    """[(board, [modules], rpc key or None)] to tune."""
    if args.cluster is None:
        if args.plan or args.rpc:
            raise MnovaError("--plan and --rpc need --cluster")
        return [(load_board(args.board or "host"), [mod], None)]
    cluster = load_cluster(args.cluster)
    if args.plan:
        from ..graph import from_relax
        from ..partition import Plan, segments
        from ..runtime import build_device_modules, prepare

        mod = prepare(mod)
        graph = from_relax(mod)
        plan = Plan.load(args.plan, graph)
        parts = build_device_modules(mod, graph, plan, segments(graph, plan))
        work = [(cluster.device(name), [part]) for name, part in zip(plan.devices, parts) if part is not None]
    else:
        work = [(device, [mod]) for device in cluster.devices]
    by_board: dict[str, tuple] = {}
    for device, mods in work:
        board, known, key = by_board.get(device.board.name, (device.board, [], device.key))
        by_board[board.name] = (board, known + mods, key)
    rpc = (cluster.tracker_host, cluster.tracker_port) if args.rpc else None
    if rpc is not None and cluster.tracker_port == 0:
        raise MnovaError(f"cluster {cluster.name} picks its tracker port when started: give the running "
                         f"cluster's tracker in the cluster file, or tune without --rpc")
    return [(board, mods, (*rpc, key) if rpc else None) for board, mods, key in by_board.values()]


def run(args) -> int:
    from ..tune import tune

    _, mod = load_from_args(args)
    root = Path(args.database)
    for board, mods, rpc in _targets(args, mod):
        summary = tune(mods, board, root, args.trials, args.kernels, rpc)
        print(f"{board.name}: {summary.kernels} kernels, {summary.trials} new trials in {summary.seconds:.0f} s "
              f"-> {summary.database}")
    return 0
