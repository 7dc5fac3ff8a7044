"""`mnova zoo list|export`: the built-in model zoo."""

from __future__ import annotations

from .. import zoo


def register(sub) -> None:
    parser = sub.add_parser("zoo", help="list or export the built-in models (ONNX, seeded random weights)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="list the 11 models").set_defaults(func=run_list)
    export = actions.add_parser("export", help="write one model as an ONNX file")
    export.add_argument("name", help="model name (see `mnova zoo list`)")
    export.add_argument("-o", "--output", required=True, help="ONNX file to write")
    export.add_argument("--input-size", type=int, default=None, help="square input size (default: the model's standard size)")
    export.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    export.set_defaults(func=run_export)


def run_list(args) -> int:
    print(f"{'model':16s} {'input':>5s} {'test':>5s} {'params':>12s}  source")
    for info in zoo.MODELS.values():
        print(f"{info.name:16s} {info.standard_input_size:5d} {info.test_input_size:5d} "
              f"{info.published_params:12,d}  {info.source}")
    print("params: the published count; `pytest tests/test_zoo.py` checks each built model against it (within 2%)")
    return 0


def run_export(args) -> int:
    model = zoo.export(args.name, args.output, args.input_size, args.seed)
    print(f"wrote {args.output}: {args.name}, {zoo.count_params(model):,d} parameters")
    return 0
