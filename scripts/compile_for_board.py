#!/usr/bin/env python3
"""Compile a model for one edge board and export a shared library for its TVM runtime.

    python scripts/compile_for_board.py --board rpi4b model.onnx -o model-rpi4b.so
    python scripts/compile_for_board.py --board rpi3b resnet18 --input-size 224 -o resnet18-rpi3b.so

Same as `mnova compile`; on the board, load it with tvm.runtime.load_module and relax.VirtualMachine
(or deploy it over TVM RPC with `mnova run`).
"""

import argparse
import sys

from mnova_tvm.cli import main as mnova_main
from mnova_tvm.commands.compile import add_compile_arguments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compile_arguments(parser)
    parser.parse_args()  # validates and prints --help here
    sys.exit(mnova_main(["compile", *sys.argv[1:]]))
