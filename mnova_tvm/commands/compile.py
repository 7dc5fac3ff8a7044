"""`mnova compile --board NAME MODEL -o OUT.so`: build a model for one board."""

from __future__ import annotations

from ..compile import build_for_board, elf_architecture, relax_pipeline
from ..targets import list_boards, load_board
from .model_args import add_model_arguments, load_from_args


def add_compile_arguments(parser) -> None:
    parser.add_argument("--board", required=True, help=f"board name ({', '.join(list_boards())}) or board JSON")
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="shared library to write (.so)")
    parser.add_argument("--no-fuse", action="store_true", help="do not fuse operators")
    parser.add_argument("--plan-memory", choices=["arena", "tvm"], default="arena",
                        help="memory planner: ours (arena, default) or TVM's StaticPlanBlockMemory")
    parser.add_argument("--order", choices=["btsearch", "import"], default="btsearch", help="operator order")


def register(sub) -> None:
    parser = sub.add_parser("compile", help="compile a model for a board and export a .so")
    add_compile_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    board = load_board(args.board)
    _, mod = load_from_args(args)
    pipeline = relax_pipeline(order=None if args.order == "import" else "btsearch",
                              plan_memory=args.plan_memory, fuse=not args.no_fuse)
    path = build_for_board(mod, board, args.output, pipeline)
    machine, bits = elf_architecture(path)
    print(f"wrote {path} for {board.name} ({machine}, {bits}-bit ELF, {path.stat().st_size / 1024:.0f} KiB)")
    return 0
