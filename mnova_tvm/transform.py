"""Relax passes: apply an operator order, search one (BTSearch), and plan memory in one arena.

Each is a module pass that composes in `tvm.transform.Sequential`. ApplyOrder and BTSearchOrder
work on main's dataflow block, before or after FuseOps/FuseTIR (when fusion is used, apply the
order after it: each fused group is placed where its last member was). ArenaPlanMemory replaces
StaticPlanBlockMemory in the lowering pipeline: TVM's planner is greedy reuse-or-grow and can
allocate well above the liveness peak of the order it is given; ours places every intermediate
at an offset in one arena from the known lifetimes (greedy by size, like TFLite's arena planner).
FastSigmoid and SubsampleStridedPointwise rewrite two operators the CPU kernels handle badly, in
the fusion passes that run before legalization.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

import tvm
import tvm_ffi
from tvm import relax

from .btsearch import btsearch
from .errors import MnovaError
from .graph import binding_names, dataflow_bindings, from_relax
from .memory import lowering_passes, place_in_arena, planned_storage_bytes

# A MnovaError raised inside a pass reaches the caller as itself, not as a generic FFI error; so
# does Ctrl-C (or `kill`, cli.py) during a compile, whose passes are Python callbacks: it came
# back as a RuntimeError, which the schedule rules take for a rule that does not fit, and the
# command went on.
tvm_ffi.register_error(MnovaError)
tvm_ffi.register_error(KeyboardInterrupt)

def reorder_main(mod: tvm.IRModule, order) -> tvm.IRModule:
    """`mod` with main's dataflow bindings emitted node by node in `order` (OpGraph node names)."""
    graph = from_relax(mod)
    why = graph.topological_violation(order)
    if why is not None:
        raise MnovaError(f"ApplyOrder: the order is invalid: {why}")
    func = mod["main"]
    bindings = dict(zip(binding_names(func), dataflow_bindings(func)))
    new_bindings = [bindings[b] for name in order for b in graph.node_by_name[name].bindings]
    if len(new_bindings) != len(bindings):
        raise MnovaError("ApplyOrder: some bindings of main belong to no operator node")
    block = relax.DataflowBlock(new_bindings)
    body = relax.SeqExpr([block], func.body.body)
    new_func = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    new_mod = tvm.IRModule(dict(mod.functions.items()), attrs=mod.attrs)
    new_mod["main"] = new_func
    return relax.transform.Normalize()(new_mod)


def ApplyOrder(order) -> tvm.transform.Pass:  # noqa: N802 (TVM pass naming)
    """Emit main's operators in `order` (a topological permutation of the OpGraph node names)."""
    order = tuple(order)

    @tvm.transform.module_pass(opt_level=0, name="mnova.ApplyOrder")
    def apply(mod, _ctx):
        return reorder_main(mod, order)

    return apply


def BTSearchOrder(time_budget: float | None = None) -> tvm.transform.Pass:  # noqa: N802
    """Reorder main's operators to the minimum-activation-peak order found by BTSearch."""
    if time_budget is not None and time_budget <= 0:
        raise MnovaError(f"time budget must be positive, got {time_budget}")

    @tvm.transform.module_pass(opt_level=0, name="mnova.BTSearchOrder")
    def apply(mod, _ctx):
        result = btsearch(from_relax(mod), time_budget)
        return reorder_main(mod, result.order)

    return apply


# --- arena memory planning ---


def _alloc_lifetimes(func) -> tuple[dict, list[int], set]:
    """For each builtin.alloc_tensor var: (first, last) binding index of it and its aliases.

    Aliases are plain var bindings, tuples, TupleGetItem and reshape views. Allocations that
    reach the function's return value are returned apart: they must outlive the function.
    """
    roots: dict = {}  # var -> set of alloc vars it may alias
    life: dict = {}
    bindings = [b for block in func.body.blocks for b in block.bindings]

    def referenced(expr) -> set:
        found = set()

        def visit(e):
            if isinstance(e, relax.Var) and e in roots:
                found.update(roots[e])

        relax.analysis.post_order_visit(expr, visit)
        return found

    for i, binding in enumerate(bindings):
        value = binding.value
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.builtin.alloc_tensor":
            roots[binding.var] = {binding.var}
            life[binding.var] = [i, i]
            continue
        used = referenced(value)
        for r in used:
            life[r][1] = i
        is_view = isinstance(value, (relax.Var, relax.Tuple, relax.TupleGetItem)) or (
            isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.reshape")
        if is_view and used:
            roots[binding.var] = used
    escaping = referenced(func.body.body)
    return life, bindings, escaping


_BUFFER_PARAM = re.compile(r'T\.Buffer\((\(.*?\)), ("\w+")\)')


def accept_offsets(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """The same kernel with parameter buffers that may start at any offset of their storage.

    Kernels from LegalizeOps declare elem_offset 0, so the generated code rejects a tensor at a
    non-zero byte_offset; redeclaring the parameters with offset_factor=1 binds the offset instead.
    """
    text = func.script()
    start = text.index("def main(")
    end = text.index("):\n", start)
    signature = _BUFFER_PARAM.sub(r"T.Buffer(\1, \2, offset_factor=1)", text[start:end])
    return tvm.script.from_source(text[:start] + signature + text[end:])


def _static_bytes(call) -> int | None:
    shape = call.args[0]
    if not isinstance(shape, relax.ShapeExpr) or not all(hasattr(v, "value") for v in shape.values):
        return None
    count = 1
    for v in shape.values:
        count *= int(v.value)
    dtype = call.args[1].value if hasattr(call.args[1], "value") else str(call.args[1])
    return count * tvm.DataType(str(dtype)).bits // 8


@dataclass(frozen=True)
class _FunctionPlan:
    """Where one function's static allocations go: intermediates at offsets in an arena, and,
    when `returned` is planned, each tensor it returns in a block of its own (TVM RPC reads a
    returned tensor from the start of its storage: one at an offset came back as the first)."""

    bindings: list
    arena_offsets: dict
    arena_bytes: int
    returned: tuple  # vars of the returned allocations
    returned_bytes: int  # the largest of them


def _plan_function(func, returned: bool) -> _FunctionPlan:
    life, bindings, escaping = _alloc_lifetimes(func)
    sizes, outputs = {}, {}
    for binding in bindings:
        if binding.var in life:
            nbytes = _static_bytes(binding.value)
            if nbytes is not None:
                (outputs if binding.var in escaping else sizes)[binding.var] = nbytes
    offsets, arena_bytes = place_in_arena(sizes, life)
    if not returned:
        outputs = {}
    return _FunctionPlan(bindings, offsets, arena_bytes, tuple(outputs), max(outputs.values(), default=0))


def _apply_plan(func, plan: _FunctionPlan, arena_bytes: int, returned_bytes: int):
    """`func` with its allocations placed by `plan` in storages of the given sizes (at least the plan's)."""
    if not plan.arena_offsets and not plan.returned:
        return func

    def storage(name: str, nbytes: int) -> relax.Var:
        var = relax.Var(name, relax.ObjectType())
        new_bindings.append(relax.VarBinding(var, relax.op.memory.alloc_storage(
            relax.ShapeExpr([nbytes]), 0, "global", "uint8")))
        return var

    new_bindings: list = []
    placed = {var: (storage(f"returned{i}", returned_bytes), 0) for i, var in enumerate(plan.returned)}
    if plan.arena_offsets:
        arena = storage("arena", arena_bytes)
        placed.update({var: (arena, offset) for var, offset in plan.arena_offsets.items()})
    for binding in plan.bindings:
        if binding.var in placed:
            block, offset = placed[binding.var]
            call = binding.value
            binding = relax.VarBinding(binding.var, relax.op.memory.alloc_tensor(block, offset, call.args[0], call.args[1]))
        new_bindings.append(binding)
    body = relax.SeqExpr([relax.BindingBlock(new_bindings)], func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)


def _arena_plan(mod, shared: bool) -> tvm.IRModule:
    plans = {gv: _plan_function(f, returned=shared) for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
    arena = max((p.arena_bytes for p in plans.values()), default=0)
    returned = max((p.returned_bytes for p in plans.values()), default=0)
    functions = {}
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            f = accept_offsets(f)
        elif gv in plans:
            plan = plans[gv]
            f = _apply_plan(f, plan, arena if shared else plan.arena_bytes, returned)
        functions[gv] = f
    return tvm.IRModule(functions, attrs=mod.attrs)


@tvm.transform.module_pass(opt_level=0, name="mnova.ArenaPlanMemory")
def ArenaPlanMemory(mod, _ctx):  # noqa: N802
    """Plan every static intermediate of each Relax function into one arena per function
    (replaces StaticPlanBlockMemory); returned tensors are allocated apart."""
    return _arena_plan(mod, shared=False)


@tvm.transform.module_pass(opt_level=0, name="mnova.DeviceArenaPlanMemory")
def DeviceArenaPlanMemory(mod, _ctx):  # noqa: N802
    """ArenaPlanMemory for a device library (a function per segment): every function takes an
    arena of the same size, the largest, and returns each tensor in a block of one size too, the
    largest returned. The VM's pooled allocator reuses a freed block only for a request of the
    same size, so a device then holds one arena and as many output blocks as a function returns
    tensors, whatever the number of segments; with a block per size it kept them all (a device
    running 37 segments held 4x its planned memory)."""
    return _arena_plan(mod, shared=True)


def _fast_sigmoid(x):
    from tvm import te, topi

    one = tvm.tirx.const(1.0, x.dtype)
    exp = topi.fast_exp(te.compute(x.shape, lambda *i: -x(*i), name="negate"))
    return te.compute(x.shape, lambda *i: one / (one + exp(*i)), name="sigmoid")


def _rewrite_calls(mod: tvm.IRModule, rewrite) -> tvm.IRModule:
    """`mod` with every call in its Relax functions replaced by ``rewrite(builder, call)`` where that
    returns an expression (None keeps the call)."""

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op):
                return call
            replacement = rewrite(self.builder_, call)
            return call if replacement is None else replacement

    rewriter = Rewriter(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


@tvm.transform.module_pass(opt_level=0, name="mnova.FastSigmoid")
def FastSigmoid(mod, _ctx):  # noqa: N802
    """Sigmoid (and so SiLU/Swish) through TVM's vectorisable fast_exp instead of a libm expf call
    per element, which made EfficientNet's activations a quarter of its time. Relative error
    ≤ 1.2e-6 (float32 rounding of the exact form is 2.3e-7), as ONNX Runtime's own approximation."""

    def rewrite(builder, call):
        if call.op.name == "relax.sigmoid" and str(call.args[0].ty.dtype) == "float32":
            return builder.call_te(_fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")
        return None

    return _rewrite_calls(mod, rewrite)


@tvm.transform.module_pass(opt_level=0, name="mnova.SubsampleStridedPointwise")
def SubsampleStridedPointwise(mod, _ctx):  # noqa: N802
    """A 1x1 convolution with stride s reads every s-th pixel: take those pixels first (a small
    copy) and convolve with stride 1. The same sums in the same order; the convolution then reads
    contiguous rows instead of touching s*s cache lines per pixel (ResNet-50's 1024->2048 stride-2
    downsample: 8x slower than ONNX Runtime as a strided kernel)."""

    def rewrite(builder, call):
        if call.op.name != "relax.nn.conv2d":
            return None
        attrs = call.attrs
        strides = [int(v) for v in attrs.strides]
        weight_shape = call.args[1].ty.shape
        if (strides == [1, 1] or str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW"
                or any(int(v) for v in attrs.padding) or any(int(v) != 1 for v in attrs.dilation)
                or weight_shape is None or [int(v) for v in weight_shape.values[2:]] != [1, 1]):
            return None
        height, width = (int(v) for v in call.args[0].ty.shape.values[2:])
        pixels = relax.op.strided_slice(call.args[0], axes=[2, 3], begin=[0, 0], end=[height, width], strides=strides)
        return relax.op.nn.conv2d(builder.emit(pixels), call.args[1], strides=1, groups=int(attrs.groups),
                                  out_dtype=attrs.out_dtype)

    return _rewrite_calls(mod, rewrite)


_POOLS_2D = {"relax.nn.max_pool2d": relax.op.nn.max_pool2d, "relax.nn.avg_pool2d": relax.op.nn.avg_pool2d}


@tvm.transform.module_pass(opt_level=0, name="mnova.DropRedundantCeilMode")
def DropRedundantCeilMode(mod, _ctx):  # noqa: N802
    """A pooling whose ceil mode adds no output window is the same pooling in floor mode. TVM
    legalizes ceil mode with a padded copy of the input whatever the shapes; floor mode without
    padding reads the input in place (SqueezeNet's 3x3 stride-2 max pools: 2x faster)."""

    def rewrite(builder, call):
        make = _POOLS_2D.get(call.op.name)
        attrs = call.attrs
        if make is None or not bool(attrs.ceil_mode) or str(attrs.layout) != "NCHW" or call.ty.shape is None:
            return None
        in_shape, out_shape = call.args[0].ty.shape.values, call.ty.shape.values
        top, left, bottom, right = (int(v) for v in attrs.padding)
        floor = [(int(in_shape[axis]) + before + after - int(d) * (int(k) - 1) - 1) // int(s) + 1
                 for axis, before, after, k, s, d in zip((2, 3), (top, left), (bottom, right), attrs.pool_size,
                                                         attrs.strides, attrs.dilation)]
        if floor != [int(v) for v in out_shape[2:]]:
            return None
        return make(call.args[0], pool_size=attrs.pool_size, strides=attrs.strides, padding=attrs.padding,
                    dilation=attrs.dilation, ceil_mode=False, count_include_pad=bool(attrs.count_include_pad),
                    layout="NCHW", out_layout=str(attrs.out_layout))

    return _rewrite_calls(mod, rewrite)


def LiftWeights(weights: dict, min_bytes: int = 4096) -> tvm.transform.Pass:  # noqa: N802
    """Every constant of at least `min_bytes` in a Relax function becomes a trailing parameter of
    it; ``weights[function name]`` receives their values in parameter order.

    Why: a library with embedded constants holds the weights twice on the device (the mapped
    file and the VM's copy of its constant pool), and uploading it over RPC peaks at several
    times its size. Shipped beside the library and uploaded tensor by tensor, they are held once.
    Run it after the last FoldConstant (weights already packed for their kernels).
    """

    @relax.expr_functor.mutator
    class Lifter(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.lifted: dict = {}  # constant -> parameter var

        def visit_generic_const_(self, const):
            if math.prod(const.value.shape) * np.dtype(const.value.dtype).itemsize < min_bytes:
                return const
            if const not in self.lifted:
                self.lifted[const] = relax.Var(f"weight{len(self.lifted)}", const.ty)
            return self.lifted[const]

    @tvm.transform.module_pass(opt_level=0, name="mnova.LiftWeights")
    def apply(mod, _ctx):
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            lifter = Lifter(mod)
            body = lifter.visit_expr(func.body)
            if not lifter.lifted:
                continue
            weights[gvar.name_hint] = [const.value.numpy() for const in lifter.lifted]
            updates[gvar] = relax.Function(list(func.params) + list(lifter.lifted.values()), body,
                                           func.ret_ty, func.is_pure, func.attrs, func.span)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return apply


def fusion_passes() -> list:
    """Legalize and fuse (FuseOps/FuseTIR), as tvm.compile's default pipeline does before lowering.
    A batch norm right after a convolution is folded into its weights and bias (no per-element
    work left); any other is decomposed (per-channel constants folded), so it fuses into the
    kernel before it instead of running on its own with a square root per element."""
    return [relax.transform.FoldBatchnormToConv2D(), relax.transform.FoldConstant(),
            relax.transform.DecomposeOpsForInference(), FastSigmoid, SubsampleStridedPointwise, DropRedundantCeilMode,
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(), relax.transform.FuseOps(),
            relax.transform.FuseTIR()]


def _after_legalize(passes: list) -> int:
    """Where kernels exist as PrimFuncs in a lowering pass list: right after its LegalizeOps."""
    return next(i for i, p in enumerate(passes) if p.info.name == "LegalizeOps") + 1


def _until_schedules(lowering: list) -> list:
    """The passes of `lowering` up to the schedules: legalized, the constant weights marked layout-free."""
    return lowering[:_after_legalize(lowering)] + [relax.transform.AttachAttrLayoutFreeBuffers()]


def kernel_module(mod: tvm.IRModule, target, fuse: bool = True) -> tvm.IRModule:
    """`mod` as lowering_pipeline hands it to the schedules: fused and legalized, one PrimFunc per
    kernel, the constant weights marked layout-free. What tuning extracts its tasks from (tune.py),
    so tuned records match at compile time and pack the weights the default schedules pack."""
    passes = (fusion_passes() if fuse else []) + _until_schedules(lowering_passes())
    with tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target:
        return tvm.transform.Sequential(passes)(mod)


def schedule_passes(target, database=None) -> list:
    """The passes that schedule a kernel_module's kernels for `target`: the best record of the
    MetaSchedule `database` (tune.py) where it has one, the default schedule (kernels.py) elsewhere;
    then the weight packing the schedules asked for runs once, at build time, on the constant weights."""
    from .kernels import default_schedule_pass, narrow_partitioned_kernels_pass

    passes = [default_schedule_pass(target)]
    if database is not None:
        from .tune import apply_database_pass

        passes.insert(0, apply_database_pass(database, target))
    return passes + [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant(),
                     narrow_partitioned_kernels_pass]


def lowering_pipeline(order=None, plan_memory: str = "arena", fuse: bool = False,
                      schedule_target=None, database=None, weights: dict | None = None) -> tvm.transform.Pass:
    """A relax pipeline for tvm.compile: optional fusion, then the order, then our memory plan.

    plan_memory "arena" uses DeviceArenaPlanMemory, "tvm" TVM's StaticPlanBlockMemory. `order` may be a
    sequence of node names, "btsearch", or None (keep the module's order). With `schedule_target`
    every kernel gets the default CPU schedule for that target (kernels.py), except the kernels a
    MetaSchedule `database` has a record for (tune.py), which get the best record. With a
    `weights` dict, the weights become parameters and their values go there (LiftWeights).
    """
    if plan_memory not in ("arena", "tvm"):
        raise MnovaError(f"plan_memory must be 'arena' or 'tvm', got {plan_memory!r}")
    passes = fusion_passes() if fuse else []
    if order == "btsearch":
        passes.append(BTSearchOrder())
    elif order is not None:
        passes.append(ApplyOrder(order))
    lowering = lowering_passes(DeviceArenaPlanMemory if plan_memory == "arena" else None)
    if schedule_target is not None:
        lowering = (_until_schedules(lowering) + schedule_passes(schedule_target, database)
                    + lowering[_after_legalize(lowering):])
    if weights is not None:
        at = next(i for i, p in enumerate(lowering) if p.info.name == "ToNonDataflow")
        lowering.insert(at, LiftWeights(weights))
    passes += lowering
    return tvm.transform.Sequential(passes, name="mnova.lowering")


def planned_bytes(mod, target="llvm", plan_memory: str = "arena") -> int:
    """Bytes of storage planned for `mod`'s current order by our arena planner or by TVM's."""
    from .memory import lower_until_memory_plan

    planner = ArenaPlanMemory if plan_memory == "arena" else None
    return planned_storage_bytes(lower_until_memory_plan(mod, target, planner))
