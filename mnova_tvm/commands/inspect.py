"""`mnova inspect MODEL`: operators, FLOPs, weight bytes, activation peak and TVM's planned bytes."""

from __future__ import annotations

import json
from collections import Counter

from ..graph import from_relax
from ..memory import activation_peak, tvm_planned_bytes
from .model_args import add_model_arguments, load_from_args


def register(sub) -> None:
    parser = sub.add_parser("inspect", help="summarise a model's operator graph and memory")
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def summary(name: str, mod) -> dict:
    graph = from_relax(mod, name)
    ops = Counter(n.op.removeprefix("relax.") for n in graph.nodes)
    return {
        "model": name,
        "inputs": {t: list(graph.tensors[t].shape) for t in graph.graph_inputs},
        "nodes": len(graph.nodes),
        "ops": dict(ops.most_common()),
        "flops": graph.flops,
        "weight_bytes": graph.weight_bytes,
        "activation_peak_bytes": activation_peak(graph),
        "tvm_planned_bytes": tvm_planned_bytes(mod),
    }


def run(args) -> int:
    name, mod = load_from_args(args)
    info = summary(name, mod)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    mib = 1024 * 1024
    print(f"model            {info['model']}")
    print(f"inputs           {', '.join(f'{k} {tuple(v)}' for k, v in info['inputs'].items())}")
    print(f"nodes            {info['nodes']}")
    print(f"ops              {', '.join(f'{k} {v}' for k, v in info['ops'].items())}")
    print(f"FLOPs            {info['flops'] / 1e9:.3f} G")
    print(f"weights          {info['weight_bytes'] / mib:.2f} MiB")
    print(f"activation peak  {info['activation_peak_bytes'] / mib:.2f} MiB  (import order, DESIGN.md memory semantics)")
    print(f"TVM planned      {info['tvm_planned_bytes'] / mib:.2f} MiB  (StaticPlanBlockMemory storage, output apart)")
    return 0
