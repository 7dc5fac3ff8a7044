#!/usr/bin/env python3
"""Latency of zoo models: ONNX Runtime vs tvm.compile (default) vs mnova_tvm.kernels, one run.

    python scripts/bench_kernels.py [--models resnet18 mobilenet_v2] [--size standard|test|N]
                                    [--threads 1|all] [--out benchmarks/kernels.md]

All three run in the same process one after another on the same input; the table gives median
latencies, the ratios to ONNX Runtime and the largest output difference to ONNX Runtime.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout, not whichever tree is pip-installed

DEFAULT_MODELS = ["resnet18", "mobilenet_v2", "squeezenet1_1"]


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="zoo names, or 'all'")
    p.add_argument("--size", default="standard", help="standard, test, or a pixel count")
    p.add_argument("--threads", default="1", choices=["1", "all"])
    p.add_argument("--no-default", action="store_true", help="skip untuned tvm.compile (slow)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timing per measurement")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "kernels.md"))
    return p.parse_args(argv)


def _median_ms(run, budget: float) -> float:
    """Median of repeated timings; the number of runs follows from one warm-up run."""
    start = time.perf_counter()
    run()
    once = time.perf_counter() - start
    repeats = max(3, min(50, int(budget / max(once, 1e-6))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return 1e3 * samples[len(samples) // 2]


def main(argv=None) -> int:
    args = _parse(argv)
    threads = 1 if args.threads == "1" else os.cpu_count()
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts

    import numpy as np
    import onnxruntime as ort
    import tvm
    from tvm import relax
    from tvm.target import codegen

    from mnova_tvm import frontend, kernels, zoo
    from mnova_tvm.commands._io import atomic_path

    names = list(zoo.MODELS) if args.models == ["all"] else args.models
    target = tvm.target.Target(
        {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": threads}
    )
    dev = tvm.cpu()
    rows = []
    for name in names:
        info = zoo.MODELS[name]
        size = {"standard": info.standard_input_size, "test": info.test_input_size}.get(args.size)
        size = int(args.size) if size is None else size
        model = zoo.build(name, input_size=size, seed=0)
        mod = frontend.import_onnx(model, source=f"zoo model {name}")
        (in_name, in_shape, _), = frontend.input_specs(mod)
        x = np.random.default_rng(0).standard_normal(in_shape).astype("float32")

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        ref = sess.run(None, feed)[0]
        row = {"model": name, "size": size, "ort": _median_ms(lambda: sess.run(None, feed), args.budget)}

        builds = [("ours", kernels.relax_pipeline(target))]
        if not args.no_default:
            builds.append(("default", None))
        for label, pipeline in builds:
            start = time.perf_counter()
            exe = tvm.compile(mod, target) if pipeline is None else tvm.compile(mod, target, relax_pipeline=pipeline)
            row[f"{label}_compile_s"] = time.perf_counter() - start
            vm = relax.VirtualMachine(exe, dev)
            xt = tvm.runtime.tensor(x, device=dev)
            out = vm["main"](xt)
            out = (out[0] if isinstance(out, tvm.ir.Array) else out).numpy()
            row[f"{label}_err"] = float(np.max(np.abs(out - ref)) / max(1e-12, float(np.max(np.abs(ref)))))
            row[label] = _median_ms(lambda: vm["main"](xt), args.budget)
        rows.append(row)
        print(
            f"{name}@{size}: ORT {row['ort']:.2f} ms, ours {row['ours']:.2f} ms "
            f"({row['ours'] / row['ort']:.2f}x), default {row.get('default', float('nan')):.2f} ms",
            flush=True,
        )

    within = sum(r["ours"] <= 2 * r["ort"] for r in rows)
    lines = [
        "# Kernels: default CPU schedules vs ONNX Runtime",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.system()} {platform.machine()}, {_cpu_name()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, TVM {tvm.__version__}, ONNX Runtime {ort.__version__}",
        f"- command: `python scripts/bench_kernels.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- threads: {threads} (ORT intra_op_num_threads, TVM_NUM_THREADS and target num-cores)",
        f"- target: `{target}`",
        "",
        "Median latency in ms. default = `tvm.compile(mod, target)` (no schedules); ours = "
        "`tvm.compile(mod, target, relax_pipeline=mnova_tvm.kernels.relax_pipeline(target))`. "
        "err = max |out - ORT| / max |ORT|.",
        f"Ours within 2x of ORT: {within}/{len(rows)}.",
        "",
        "| model | input | ORT ms | default ms | ours ms | default / ORT | ours / ORT | ours err | ours compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        default = "-" if "default" not in r else f"{r['default']:.2f}"
        default_ratio = "-" if "default" not in r else f"{r['default'] / r['ort']:.1f}"
        lines.append(
            f"| {r['model']} | {r['size']} | {r['ort']:.2f} | {default} | {r['ours']:.2f} | "
            f"{default_ratio} | {r['ours'] / r['ort']:.2f} | {r['ours_err']:.1e} | "
            f"{r['ours_compile_s']:.1f} |"
        )
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
