"""`mnova` command line: one subcommand per module in mnova_tvm.commands.

Each command module defines `register(subparsers)` (adds its parser and sets `func`) and the
function it runs. A MnovaError (and a Ctrl-C) ends the command with a one-line message and exit
code 2 (130 for Ctrl-C), no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from .errors import MnovaError

COMMAND_MODULES = [
    "zoo",
    "inspect",
    "schedule",
    "bench",
    "compile",
    "cluster",
    "plan",
    "run",
    "profile",
    "train-cost-model",
    "demo",
    "tune",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnova",
        description="Memory-optimal operator order and memory-constrained multi-device partitioning on Apache TVM.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"mnova_tvm.commands.{name.replace('-', '_')}").register(sub)
    return parser


def _terminate(_signum, _frame):
    raise KeyboardInterrupt  # so `kill` cleans up like Ctrl-C (clusters started by the command stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    from .tune import tuned

    try:
        with tuned(getattr(args, "tuned", None)):  # compile with the tuning databases the user chose
            code = args.func(args)
    except MnovaError as err:
        print(f"mnova {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mnova {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
