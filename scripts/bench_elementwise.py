"""Elementwise kernels with and without the contiguous-loop rule (kernels._schedule_injective),
side by side in one process on this machine's CPU, one thread; results to a Markdown file.

    python3 scripts/bench_elementwise.py [-o benchmarks/elementwise.md]

"Before" is the rule as it was: the nest left to LLVM on one core (only its innermost loop is
vectorised). Both builds go through the pipeline `mnova compile` uses; outputs are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import tvm
from tvm import relax

from mnova_tvm import kernels
from mnova_tvm.commands._io import atomic_path
from mnova_tvm.compile import relax_pipeline
from mnova_tvm.report import markdown_table, results_header
from mnova_tvm.targets import load_board

SHAPES = [(1, 96, 14, 14), (1, 96, 7, 14), (1, 96, 11, 14), (1, 512, 7, 7), (1, 144, 28, 28), (1, 1152, 2, 7),
          (1, 64, 56, 56), (1, 32, 112, 112)]
OPS = ("add", "relu", "sigmoid", "channel_scale", "batch_norm", "pad")


def _module(op: str, shape):
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    other_shape = shape if op == "add" else (1, shape[1], 1, 1)
    params = [x] + ([relax.Var("y", relax.TensorType(other_shape, "float32"))] if op in ("add", "channel_scale", "batch_norm") else [])
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            ops = relax.op
            value = {"add": lambda: ops.add(x, params[-1]), "relu": lambda: ops.nn.relu(x), "sigmoid": lambda: ops.sigmoid(x),
                     "channel_scale": lambda: ops.multiply(x, params[-1]),
                     "batch_norm": lambda: ops.nn.relu(ops.add(ops.multiply(x, params[-1]), params[-1])),
                     "pad": lambda: ops.nn.pad(x, (0, 0, 0, 0, 1, 1, 1, 1))}[op]()
            out = bb.emit_output(bb.emit(value))
        bb.emit_func_output(out)
    return bb.get(), [tuple(int(v) for v in p.ty.shape.values) for p in params]


def _left_to_llvm(sch, block, loops, extents, lanes, cores):
    raise tvm.s_tir.ScheduleError("nothing to do")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default="benchmarks/elementwise.md")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of before/after timings (median kept)")
    args = parser.parse_args(argv)
    board = load_board("host")  # this CPU, one core
    target = board.tvm_target()
    rule = kernels._schedule_injective
    table, ratios = [], []
    for op in OPS:
        for shape in SHAPES:
            mod, shapes = _module(op, shape)
            rng = np.random.default_rng(0)
            inputs = [tvm.runtime.tensor(rng.standard_normal(s).astype("float32")) for s in shapes]
            vms = {}
            for label, schedule in (("before", _left_to_llvm), ("after", rule)):
                kernels._schedule_injective = schedule
                try:
                    exe = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(order=None, plan_memory="tvm", board=board))
                finally:
                    kernels._schedule_injective = rule
                vms[label] = relax.VirtualMachine(exe, tvm.cpu())
            outputs = [vms[k]["main"](*inputs).numpy() for k in ("before", "after")]
            timings = {k: [] for k in vms}
            for _ in range(args.rounds):
                for label, vm in vms.items():
                    timings[label].append(vm.time_evaluator("main", tvm.cpu(), number=50, repeat=3, min_repeat_ms=10)(*inputs).median)
            before, after = (1e6 * statistics.median(timings[k]) for k in ("before", "after"))
            ratios.append(before / after)
            elements = int(np.prod(shape))
            table.append([op, "x".join(map(str, shape[1:])), f"{before:.2f}", f"{after:.2f}", f"{1e3 * before / elements:.3f}",
                          f"{1e3 * after / elements:.3f}", f"{before / after:.2f}", "yes" if np.array_equal(*outputs) else "NO"])
            print(" ".join(map(str, table[-1])), file=sys.stderr, flush=True)
    header = results_header("Elementwise kernels: the innermost loop left to LLVM against one flat vector loop")
    text = header.replace("- command: `mnova", "- command: `python3 scripts/bench_elementwise.py", 1) + f"""
One thread, target `{target}`. Each kernel built twice through the pipeline `mnova compile` uses: before, the rule as
it was (on one core an injective block was left to LLVM, which vectorises its innermost loop only); after,
kernels._schedule_injective (the innermost loops that walk every buffer contiguously fused into one flat loop,
vectorised in unrolled steps of four vectors when its length allows). Median of {args.rounds} rounds, the two builds
timed in turn in each. channel_scale multiplies by a per-channel tensor (squeeze-excite), batch_norm is scale, shift
and ReLU per channel; pad is not contiguous and stays as it was. Speed-up: median {statistics.median(ratios):.2f}x,
range {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} kernels.

""" + markdown_table(["kernel", "C x H x W", "before us", "after us", "before ns/element", "after ns/element", "speed-up",
                      "same output"], table)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
