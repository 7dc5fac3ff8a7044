"""The distributed executor: a Plan's segments compiled per device and run through a coordinator.

For every device, each segment it takes part in becomes one Relax function that re-emits the
segment's original calls on the device's slices (inputs cut to their regions, constants cut to
the device's channels, padding kept only at true image borders). All of a device's functions
are compiled into one library for its board. The coordinator holds the full tensors, sends each
device exactly its input regions, runs the devices of a segment in parallel, and assembles the
output regions; segments run one after another in plan order (the cost model follows the same
rules).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .errors import MnovaError, last_line
from .graph import OpGraph, binding_names, dataflow_bindings, from_relax
from .partition import AXIS, WINDOWED, Plan, Region, Segment, _role, _window_input_rows, region_shape, segments


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Fold weight-only operators into constants: the form partitioning works on. Marked, so the
    stages of the main job (plan, profile, calibrate) do not fold a large model again."""
    if mod.attrs is not None and PREPARED in mod.attrs:
        return mod
    return relax.transform.FoldConstant()(relax.transform.Normalize()(mod)).with_attr(PREPARED, True)


PREPARED = "mnova.prepared"


def _const_value(expr) -> np.ndarray:
    return expr.value.numpy()


def _tensor_names(func) -> dict:
    """Relax var -> OpGraph tensor name (TupleGetItem vars name the producer's fields)."""
    names = {p: p.name for p in func.params}
    for binding, bname in zip(dataflow_bindings(func), binding_names(func)):
        value = binding.value
        if isinstance(value, relax.TupleGetItem):
            names[binding.var] = f"{names[value.tuple_value]}.{value.index}"
        else:
            names[binding.var] = bname
    return names


def _slice_np(array: np.ndarray, region: Region) -> np.ndarray:
    axis, lo, hi = region
    if axis < 0:
        return array
    index = [slice(None)] * array.ndim
    index[axis] = slice(lo, hi)
    return np.ascontiguousarray(array[tuple(index)])


def _slice_const(value: np.ndarray, out_rank: int, axis: int, lo: int, hi: int, full: int) -> np.ndarray:
    """Cut a broadcasting constant along the output axis `axis` if it spans that axis."""
    const_axis = axis - (out_rank - value.ndim)
    if 0 <= const_axis < value.ndim and value.shape[const_axis] == full and full > 1:
        index = [slice(None)] * value.ndim
        index[const_axis] = slice(lo, hi)
        return np.ascontiguousarray(value[tuple(index)])
    return value


class _SegmentBuilder:
    """Emits one device's function for one segment."""

    def __init__(self, graph: OpGraph, calls: dict, var_names: dict):
        self.graph, self.calls, self.var_names = graph, calls, var_names

    def build(self, bb: relax.BlockBuilder, seg: Segment, device: int, fname: str) -> None:
        graph = self.graph
        params, local = [], {}
        for t in seg.inputs:
            region = seg.input_regions[device][t]
            shape = region_shape(graph.tensors[t].shape, region)
            var = relax.Var(t.replace(".", "_"), relax.TensorType(shape, graph.tensors[t].dtype))
            params.append(var)
            local[t] = (var, region)
        with bb.function(fname, params):
            with bb.dataflow():
                for name in seg.nodes:
                    self._emit(bb, seg, device, name, local)
                outs = [self._take(bb, local, t, seg.output_regions[device][t]) for t in seg.outputs]
                # one output: a bare tensor (a tuple costs extra round trips over RPC)
                result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
            bb.emit_func_output(result)

    def _take(self, bb, local, tensor: str, need: Region):
        """`tensor` cut to region `need` from what this function holds of it."""
        expr, have = local[tensor]
        if have == need or need[0] < 0 and have[0] < 0:
            return expr
        axis, lo, hi = need
        offset = 0 if have[0] < 0 else have[1]
        if have[0] >= 0 and have[0] != axis:
            raise MnovaError(f"internal: region mismatch for {tensor}")
        return bb.emit(relax.op.strided_slice(expr, axes=[axis], begin=[lo - offset], end=[hi - offset]))

    def _emit(self, bb, seg: Segment, device: int, name: str, local: dict) -> None:
        graph = self.graph
        node = graph.node_by_name[name]
        call = self.calls[name]
        out_region = seg.node_regions[device][name]
        dim = seg.dim
        role = _role(graph, node).get(dim) if dim != "none" else None
        out_shape = graph.tensors[node.outputs[0]].shape
        axis, lo, hi = out_region
        first = name == seg.nodes[0]
        height_window = dim == "height" and role == "window"

        def arg(expr):
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([arg(f) for f in expr.fields])
            if isinstance(expr, relax.Var):
                t = self.var_names[expr]
                if dim == "none":
                    need = (-1, 0, 0)
                elif height_window and first:
                    need = (2, *_window_input_rows(node, lo, hi, graph.tensors[t].shape[2])[:2])
                elif role == "whole-input":
                    need = (-1, 0, 0)
                elif graph.tensors[t].shape[AXIS[dim]] == 1 and out_shape[AXIS[dim]] > 1:
                    need = (-1, 0, 0)
                else:
                    need = (AXIS[dim], lo, hi)
                return self._take(bb, local, t, need)
            if type(expr).__name__ in ("GenericConst", "Constant"):
                value = _const_value(expr)
                if dim == "channel":
                    if node.op == "relax.matmul":
                        value = np.ascontiguousarray(value[..., lo:hi])
                    elif node.op == "relax.nn.conv2d":
                        value = np.ascontiguousarray(value[lo:hi])
                    elif node.op == "relax.nn.batch_norm":
                        value = np.ascontiguousarray(value[lo:hi])
                    else:
                        value = _slice_const(value, len(out_shape), 1, lo, hi, out_shape[1])
                elif dim == "height" and node.op not in WINDOWED:  # a conv's kernel rows are not image rows
                    value = _slice_const(value, len(out_shape), 2, lo, hi, out_shape[2])
                return relax.const(value)
            return expr

        args = [arg(a) for a in call.args]
        if node.op == "relax.nn.conv2d" and dim != "none":
            a = call.attrs
            padding = list(node.attrs["padding"])
            groups = node.attrs["groups"]
            if height_window:
                _, _, padding[0], padding[2] = _window_input_rows(node, lo, hi, graph.tensors[node.inputs[0]].shape[2])
            if dim == "channel" and groups > 1:
                groups = hi - lo
            expr = relax.op.nn.conv2d(args[0], args[1], strides=node.attrs["strides"], padding=padding,
                                      dilation=node.attrs["dilation"], groups=groups, data_layout=str(a.data_layout),
                                      kernel_layout=str(a.kernel_layout), out_layout=str(a.out_layout))
        elif node.op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d") and height_window:
            padding = list(node.attrs["padding"])
            _, _, padding[0], padding[2] = _window_input_rows(node, lo, hi, graph.tensors[node.inputs[0]].shape[2])
            # ceil mode only adds windows at the right/bottom: make them explicit padding instead
            in_w, out_w = graph.tensors[node.inputs[0]].shape[3], out_shape[3]
            kw, sw = node.attrs["kernel"][1], node.attrs["strides"][1]
            padding[3] = max(padding[3], (out_w - 1) * sw + kw - in_w - padding[1])
            make = relax.op.nn.max_pool2d if node.op == "relax.nn.max_pool2d" else relax.op.nn.avg_pool2d
            expr = make(args[0], pool_size=node.attrs["kernel"], strides=node.attrs["strides"], padding=padding,
                        dilation=node.attrs["dilation"], ceil_mode=False,
                        count_include_pad=bool(node.attrs.get("count_include_pad", False)), layout="NCHW")
        else:
            expr = relax.Call(call.op, args, call.attrs, call.ty_args)
        value = bb.emit(expr)
        if len(node.outputs) == 1 and not isinstance(value.ty, relax.TupleType):
            local[node.outputs[0]] = (value, out_region)
        else:
            for i, t in enumerate(node.outputs):
                local[t] = (bb.emit(relax.TupleGetItem(value, i)), out_region)


def build_device_modules(mod: tvm.IRModule, graph: OpGraph, plan: Plan, segs: list[Segment]) -> list[tvm.IRModule | None]:
    """One Relax module per device holding a function `seg{k}` per segment it takes part in."""
    func = mod["main"]
    calls = {name: b.value for name, b in zip(binding_names(func), dataflow_bindings(func))}
    builder = _SegmentBuilder(graph, calls, _tensor_names(func))
    # kernels that main calls directly (call_tir left by FoldConstant) come along unchanged
    helpers = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"})
    modules = []
    for d in range(len(plan.devices)):
        bb = relax.BlockBuilder(helpers)
        count = 0
        for seg in segs:
            if seg.active(d):
                builder.build(bb, seg, d, f"seg{seg.index}")
                count += 1
        modules.append(relax.transform.Normalize()(bb.get()) if count else None)
    return modules


# --- running ---


@dataclass
class DeviceTimes:
    compute_s: float = 0.0
    send_s: float = 0.0
    receive_s: float = 0.0
    sent_bytes: int = 0
    received_bytes: int = 0


@dataclass(frozen=True)
class Event:
    """One interval of a device's work in a run, seconds from the run's start (for timelines)."""

    device: int
    segment: int
    kind: str  # "send", "compute" or "receive"
    start_s: float
    end_s: float


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    seconds: float
    devices: list[DeviceTimes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class LocalRunner:
    """Runs a device's library in this process (tests, and the reference path)."""

    def __init__(self, name: str, latency_s: float = 0.0):
        self.name, self.latency_s = name, latency_s
        self.device = tvm.cpu()
        self.vm, self.weights = None, {}

    def load(self, library: Path) -> None:
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        self._upload_weights(library)

    def _upload_weights(self, library: Path) -> None:
        """The weights shipped beside the library, uploaded once, tensor by tensor."""
        self.weights = {function: [self.upload(a) for a in arrays] for function, arrays in load_weights(library).items()}

    def upload(self, array: np.ndarray):
        return tvm.runtime.tensor(array, device=self.device)

    def call(self, function: str, args: list, n_outputs: int) -> list:
        """Run `function` of the loaded library; its outputs as a flat list of tensors."""
        return _as_list(self.vm[function](*args, *self.weights.get(function, ())))


class RemoteRunner(LocalRunner):
    """Runs a device's library on an RPC session (a board or an emulated device).

    `latency_s` is added per transfer by the coordinator when the link's latency is not already
    added by the kernel (tc netem).
    """

    def __init__(self, name: str, session, latency_s: float = 0.0):
        self.name, self.session, self.latency_s = name, session, latency_s
        self.device = session.cpu()
        self.vm, self.weights = None, {}

    def load(self, library: Path) -> None:
        self.session.upload(str(library))
        self.vm = relax.VirtualMachine(self.session.load_module(library.name), self.device)
        self._upload_weights(library)

    def call(self, function: str, args: list, n_outputs: int) -> list:
        """A remote tuple cannot be iterated here: its fields are read on the device. (The VM's
        stateful API would keep every multi-output function's inputs and outputs on the device
        until that function's next call.)"""
        result = self.vm[function](*args, *self.weights.get(function, ()))
        if n_outputs == 1:
            return [result]
        field = self.session.get_function("ffi.ArrayGetItem")
        return [field(result, i) for i in range(n_outputs)]


def weights_path(library: Path) -> Path:
    """Where the weights lifted out of a device's library (transform.LiftWeights) are kept."""
    return library.with_name(f"{library.stem}.weights.npz")


def save_weights(weights: dict, library: Path) -> None:
    """``weights[function]``, the values of its trailing weight parameters, beside `library`."""
    from .commands._io import atomic_path

    arrays = {f"{function}:{i}": value for function, values in weights.items() for i, value in enumerate(values)}
    with atomic_path(weights_path(library)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_weights(library: Path) -> dict[str, list[np.ndarray]]:
    """What save_weights stored beside `library` ({} for a library that carries its own)."""
    path = weights_path(library)
    if not path.exists():
        return {}
    weights: dict[str, list] = {}
    with np.load(path) as stored:
        for key in sorted(stored.files, key=lambda k: (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]))):
            weights.setdefault(key.rsplit(":", 1)[0], []).append(stored[key])
    return weights


def _as_list(value) -> list:
    if hasattr(value, "numpy"):
        return [value]
    return [v for item in value for v in _as_list(item)]


def execute(graph: OpGraph, plan: Plan, segs: list[Segment], runners: list, inputs: list[np.ndarray],
            device_names: list[str] | None = None, timeout_s: float = 300.0) -> RunResult:
    """One inference through the coordinator; `runners[d]` is None for a device with no work.

    The devices of a segment run in parallel (daemon threads, so a device that never answers
    is reported after `timeout_s` and cannot hold the process).
    """
    values = dict(zip(graph.graph_inputs, inputs))
    times = [DeviceTimes() for _ in runners]
    events: list[Event] = []
    started = time.perf_counter()
    names = device_names or [f"device {d}" for d in range(len(runners))]

    def run_on(d: int, seg: Segment, out: dict):
        runner, t = runners[d], times[d]
        try:
            t0 = time.perf_counter()
            args = []
            for name in seg.inputs:
                array = _slice_np(values[name], seg.input_regions[d][name])
                args.append(runner.upload(array))
                t.sent_bytes += array.nbytes
            if runner.latency_s:
                time.sleep(runner.latency_s)
            t1 = time.perf_counter()
            result = runner.call(f"seg{seg.index}", args, len(seg.outputs))
            t2 = time.perf_counter()
            arrays = [r.numpy() for r in result]
            if runner.latency_s:
                time.sleep(runner.latency_s)
            t3 = time.perf_counter()
        except BaseException as err:  # reported by the coordinator, naming the device
            out[d] = err
            return
        t.send_s += t1 - t0
        t.compute_s += t2 - t1
        t.receive_s += t3 - t2
        t.received_bytes += sum(a.nbytes for a in arrays)
        for kind, a, b in (("send", t0, t1), ("compute", t1, t2), ("receive", t2, t3)):
            events.append(Event(d, seg.index, kind, a - started, b - started))
        out[d] = arrays

    for seg in segs:
        active = [d for d in range(len(runners)) if seg.active(d)]
        results: dict = {}
        threads = {d: threading.Thread(target=run_on, args=(d, seg, results), daemon=True) for d in active}
        for thread in threads.values():
            thread.start()
        deadline = time.monotonic() + timeout_s
        for d, thread in threads.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise MnovaError(f"{names[d]} did not answer within {timeout_s:.0f} s in segment {seg.index}; "
                                 f"check that it is up (mnova cluster status)")
            if isinstance(results[d], BaseException):
                raise MnovaError(f"{names[d]} failed while running segment {seg.index}: {last_line(results[d])}; "
                                 f"check that it is up (mnova cluster status)")
        for k, name in enumerate(seg.outputs):
            tensor = graph.tensors[name]
            if seg.dim == "none":
                values[name] = results[active[0]][k]
                continue
            full = np.empty(tensor.shape, dtype=tensor.dtype)
            for d in active:
                index = [slice(None)] * len(tensor.shape)
                axis, lo, hi = seg.output_regions[d][name]
                index[axis] = slice(lo, hi)
                full[tuple(index)] = results[d][k]
            values[name] = full
    return RunResult([values[t] for t in graph.graph_outputs], time.perf_counter() - started, times,
                     sorted(events, key=lambda e: e.start_s))


def compile_plan(mod: tvm.IRModule, plan: Plan, boards: list, workdir: Path, graph: OpGraph | None = None,
                 log=lambda *_: None):
    """Compile every device's part of `plan` for its board into `workdir`, each library with its
    weights beside it (save_weights); returns (graph, segments, library paths)."""
    from .compile import build_for_board, relax_pipeline

    graph = graph or from_relax(mod)
    segs = segments(graph, plan)
    modules = build_device_modules(mod, graph, plan, segs)
    paths = []
    workdir.mkdir(parents=True, exist_ok=True)
    for d, (module, board) in enumerate(zip(modules, boards)):
        if module is None:
            paths.append(None)
            continue
        t0 = time.perf_counter()
        path = workdir / f"{plan.devices[d]}.so"
        weights: dict = {}
        build_for_board(module, board, path, relax_pipeline(order=None, board=board, weights=weights))
        save_weights(weights, path)
        log(f"compiled {plan.devices[d]} ({board.name}): {sum(seg.active(d) for seg in segs)} segments "
            f"in {time.perf_counter() - t0:.1f} s")
        paths.append(path)
    return graph, segs, paths


def run_locally(mod: tvm.IRModule, plan: Plan, inputs: list[np.ndarray], workdir: Path) -> RunResult:
    """Compile for the host and run every device's part in this process (same rules as RPC)."""
    from .targets import load_board

    graph = from_relax(mod)
    host = load_board("host")
    graph, segs, paths = compile_plan(mod, plan, [host] * len(plan.devices), workdir, graph)
    runners = []
    for name, path in zip(plan.devices, paths):
        if path is None:
            runners.append(None)
            continue
        runner = LocalRunner(name)
        runner.load(path)
        runners.append(runner)
    return execute(graph, plan, segs, runners, inputs, list(plan.devices))
