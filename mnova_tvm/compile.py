"""Per-board compilation: a Relax module -> a shared library for the board's CPU.

The pipeline is ours by default: optional fusion, the BTSearch order, and the arena memory
planner; ARM boards link with Debian's cross compilers (gcc-aarch64-linux-gnu,
gcc-arm-linux-gnueabihf).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tvm

from .commands._io import atomic_path
from .errors import MnovaError, raise_if_interrupted
from .targets import Board
from .transform import lowering_pipeline


def relax_pipeline(order="btsearch", plan_memory: str = "arena", fuse: bool = True, board: Board | None = None,
                   weights: dict | None = None):
    """The Relax pipeline used to build for a board (see transform.lowering_pipeline): with a
    board, every kernel gets the default CPU schedule for its target (kernels.py), or its tuned
    one when a tuning database is in use for the board (tune.py); with a `weights` dict, the
    weights are lifted out of the library into it."""
    from .tune import database_for

    if board is None:
        return lowering_pipeline(order=order, plan_memory=plan_memory, fuse=fuse, weights=weights)
    return lowering_pipeline(order=order, plan_memory=plan_memory, fuse=fuse, schedule_target=board.tvm_target(),
                             database=database_for(board), weights=weights)


def _fcompile(board: Board):
    if board.cross_compiler is None:
        return None
    if shutil.which(board.cross_compiler) is None:
        raise MnovaError(f"board {board.name} needs the cross compiler {board.cross_compiler}: "
                         f"install it (bash scripts/install.sh, or apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf)")
    from tvm.support import cc

    return cc.cross_compiler(board.cross_compiler)


def build(mod: tvm.IRModule, board: Board, pipeline=None):
    """The compiled VM executable of `mod` for `board` (not yet exported)."""
    pipeline = relax_pipeline(board=board) if pipeline is None else pipeline
    executable = tvm.compile(mod, target=board.tvm_target(), relax_pipeline=pipeline)
    raise_if_interrupted()
    return executable


def build_for_board(mod: tvm.IRModule, board: Board, out_path, pipeline=None) -> Path:
    """Compile `mod` for `board` and export a shared library to `out_path` (written atomically)."""
    out_path = Path(out_path)
    if out_path.suffix != ".so":
        raise MnovaError(f"output {out_path} should end in .so (a shared library the board's TVM runtime loads)")
    fcompile = _fcompile(board)
    executable = build(mod, board, pipeline)
    with atomic_path(out_path) as tmp:
        if fcompile is None:
            executable.export_library(str(tmp))
        else:
            executable.export_library(str(tmp), fcompile=fcompile)
    return out_path


ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}


def elf_architecture(path) -> tuple[str, int]:
    """(machine, 32 or 64) from an ELF file's header."""
    header = Path(path).read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise MnovaError(f"{path} is not an ELF file")
    bits = 32 if header[4] == 1 else 64
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"machine {machine}"), bits
