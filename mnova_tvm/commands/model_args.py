"""The MODEL argument every command shares: an ONNX path or a zoo name, with shape options."""

from __future__ import annotations

from ..frontend import load_model, model_name, parse_input_shape


def add_model_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="ONNX file or zoo model name (mnova zoo list)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...",
                        help="static shape of an input (repeatable); needed for dynamic dimensions")
    parser.add_argument("--input-size", type=int, default=None,
                        help="square input size of a zoo model (default: its standard size)")


def load_from_args(args):
    """(name, Relax IRModule) for the MODEL arguments."""
    shapes = dict(parse_input_shape(text) for text in args.input_shape)
    return model_name(args.model), load_model(args.model, shapes or None, args.input_size)


def add_tuned_argument(parser) -> None:
    parser.add_argument("--tuned", default=None, metavar="DIR",
                        help="use the MetaSchedule records in this folder (mnova tune) for the boards it has; "
                             "profile with the same folder so the cost model describes the tuned kernels")
