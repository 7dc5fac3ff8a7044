"""`mnova compile --board NAME MODEL -o OUT.so`: build a model for one board."""

from __future__ import annotations

from ..compile import build_for_board, elf_architecture, relax_pipeline
from ..errors import MnovaError
from ..targets import list_boards, load_board
from .model_args import add_model_arguments, add_tuned_argument, load_from_args


def add_compile_arguments(parser) -> None:
    parser.add_argument("--board", required=True, help=f"board name ({', '.join(list_boards())}) or board JSON")
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="shared library to write (.so)")
    parser.add_argument("--no-fuse", action="store_true", help="do not fuse operators")
    parser.add_argument("--plan-memory", choices=["arena", "tvm"], default="arena",
                        help="memory planner: ours (arena, default) or TVM's StaticPlanBlockMemory")
    parser.add_argument("--order", choices=["btsearch", "import"], default="btsearch", help="operator order")
    parser.add_argument("--plan", default=None, help="Plan JSON: build only one device's part (with --device)")
    parser.add_argument("--device", default=None, help="the plan device whose segments to build")
    add_tuned_argument(parser)


def register(sub) -> None:
    parser = sub.add_parser("compile", help="compile a model for a board and export a .so")
    add_compile_arguments(parser)
    parser.set_defaults(func=run)


def _device_part(mod, plan_path: str, device: str | None):
    """The Relax module of one device's segments under a plan (what `mnova run` deploys)."""
    from ..graph import from_relax
    from ..partition import Plan, segments
    from ..runtime import build_device_modules, prepare

    mod = prepare(mod)
    graph = from_relax(mod)
    plan = Plan.load(plan_path, graph)
    if device not in plan.devices:
        raise MnovaError(f"--device must name one of the plan's devices: {', '.join(plan.devices)}")
    part = build_device_modules(mod, graph, plan, segments(graph, plan))[plan.devices.index(device)]
    if part is None:
        raise MnovaError(f"device {device} has no work in this plan: nothing to compile")
    return part


def run(args) -> int:
    board = load_board(args.board)
    _, mod = load_from_args(args)
    if args.plan:
        mod = _device_part(mod, args.plan, args.device)
        pipeline = relax_pipeline(order=None, plan_memory="tvm", fuse=not args.no_fuse, board=board)
    else:
        pipeline = relax_pipeline(order=None if args.order == "import" else "btsearch",
                                  plan_memory=args.plan_memory, fuse=not args.no_fuse, board=board)
    path = build_for_board(mod, board, args.output, pipeline)
    machine, bits = elf_architecture(path)
    print(f"wrote {path} for {board.name} ({machine}, {bits}-bit ELF, {path.stat().st_size / 1024:.0f} KiB)")
    return 0
