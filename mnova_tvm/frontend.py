"""Model import: ONNX file, onnx.ModelProto, zoo name or Relax IRModule -> Relax IRModule.

Every failure a user can cause (missing or corrupt file, an operator TVM cannot import, a dynamic
input without a given shape) is a one-line MnovaError that says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import tvm
from tvm import relax

from .errors import MnovaError

InputShapes = Mapping[str, Sequence[int]]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'input=1,3,224,224' -> ('input', (1, 3, 224, 224))."""
    name, sep, dims = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.split(","))
        if any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise MnovaError(f"bad --input-shape {text!r}: write NAME=D1,D2,... with positive integers, e.g. input=1,3,224,224") from None
    return name, shape


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise MnovaError(f"model file {path} does not exist: give an ONNX file path or a zoo model name (mnova zoo list)")
    if path.is_dir():
        raise MnovaError(f"{path} is a directory: give an ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception:  # protobuf raises several types for garbage
        raise MnovaError(f"{path} is not a readable ONNX model (corrupt or another format): export it again with onnx") from None
    if not model.graph.node:
        raise MnovaError(f"{path} is not a readable ONNX model (no graph nodes): export it again with onnx")
    return model


def _check_supported(model: onnx.ModelProto, source: str) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    missing = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type not in known}
                     | {f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if missing:
        raise MnovaError(f"{source} uses operators TVM 0.27 cannot import: {', '.join(missing)}; "
                         f"replace them (e.g. re-export with another opset or decompose them) before importing")


def _static_input_shapes(model: onnx.ModelProto, input_shapes: InputShapes | None, source: str) -> dict[str, list[int]]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    given = dict(input_shapes or {})
    unknown = sorted(set(given) - {i.name for i in inputs})
    if unknown:
        raise MnovaError(f"--input-shape names {', '.join(unknown)}, but {source} has inputs: "
                         f"{', '.join(i.name for i in inputs)}")
    shapes = {}
    for inp in inputs:
        if inp.name in given:
            shapes[inp.name] = [int(d) for d in given[inp.name]]
            continue
        dims = inp.type.tensor_type.shape.dim
        shape = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            else:
                label = d.dim_param or "?"
                raise MnovaError(f"input {inp.name!r} of {source} has a dynamic dimension {axis} ({label}): "
                                 f"give its shape, e.g. --input-shape {inp.name}=1,3,224,224")
        shapes[inp.name] = shape
    return shapes


def import_onnx(model: onnx.ModelProto, input_shapes: InputShapes | None = None, source: str = "the model") -> tvm.IRModule:
    """Relax module of an ONNX model with static shapes; weights stay constants."""
    import tvm.relax.frontend.onnx as onnx_frontend

    _check_supported(model, source)
    shapes = _static_input_shapes(model, input_shapes, source)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    try:
        mod = onnx_frontend.from_onnx(model, shape_dict=shapes, opset=opset, keep_params_in_input=False)
    except MnovaError:
        raise
    except Exception as err:  # the frontend raises many types; keep its first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MnovaError(f"TVM could not import {source}: {first[:300]}") from None
    return relax.transform.Normalize()(mod)


def load_model(model, input_shapes: InputShapes | None = None, input_size: int | None = None) -> tvm.IRModule:
    """Relax IRModule from an ONNX path, an onnx.ModelProto, a zoo model name or an IRModule."""
    if isinstance(model, tvm.IRModule):
        return model
    if isinstance(model, onnx.ModelProto):
        return import_onnx(model, input_shapes)
    if isinstance(model, (str, os.PathLike)):
        text = str(model)
        from . import zoo

        if text in zoo.MODELS and not Path(text).exists():
            return import_onnx(zoo.build(text, input_size), input_shapes, source=f"zoo model {text}")
        if input_size is not None:
            raise MnovaError("--input-size applies to zoo models only; use --input-shape NAME=DIMS for ONNX files")
        return import_onnx(read_onnx(text), input_shapes, source=text)
    raise MnovaError(f"cannot load a model from {type(model).__name__}: give an ONNX path, ModelProto, zoo name or IRModule")


def model_name(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return Path(str(model)).stem
    if isinstance(model, onnx.ModelProto):
        return model.graph.name or "model"
    return "module"


def input_specs(mod: tvm.IRModule) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of main's parameters, in order."""
    return [(p.name, tuple(int(v) for v in p.ty.shape.values), str(p.ty.dtype)) for p in mod["main"].params]


def random_inputs(mod: tvm.IRModule, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _, shape, dtype in input_specs(mod)]


def compile_module(mod: tvm.IRModule, target=None, relax_pipeline="default"):
    """TVM's own build of `mod` (default: for this machine's CPU, as the host board compiles, so
    a reference and the code it checks round alike, fused multiply-adds included)."""
    if target is None:
        from .targets import load_board

        target = load_board("host").tvm_target()
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline)


def run(executable, inputs: Sequence[np.ndarray], device=None) -> list[np.ndarray]:
    """Run main of a compiled executable (or an IRModule, compiled for the host) on CPU."""
    if isinstance(executable, tvm.IRModule):
        executable = compile_module(executable)
    device = device or tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    out = vm["main"](*[tvm.runtime.tensor(x, device=device) for x in inputs])
    return _flatten_outputs(out)


def _flatten_outputs(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    result = []
    for item in out:
        result.extend(_flatten_outputs(item))
    return result
