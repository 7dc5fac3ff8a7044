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

from .errors import MnovaError, clear_interrupt, request_interrupt

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
    "score-cost-model",
    "refeature",
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


def _interrupt(_signum, _frame):
    request_interrupt()  # so `kill` cleans up like Ctrl-C (clusters started by the command stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(sig) is not signal.SIG_IGN}  # a job started with `&` keeps ignoring Ctrl-C
    try:
        return _run(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        clear_interrupt()


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
