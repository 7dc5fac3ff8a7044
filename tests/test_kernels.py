"""Default CPU schedules: same outputs as the unscheduled build, schedules really applied, ARM links."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.support import cc

from mnova_tvm import frontend, kernels, zoo
from mnova_tvm.transform import (DropRedundantCeilMode, FastSigmoid, SubsampleStridedPointwise, fusion_passes,
                                 kernel_module, lowering_pipeline)

HOST = tvm.target.Target({"kind": "llvm", "num-cores": 2})
AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 4}
ARMV7 = {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mcpu": "cortex-a7", "mattr": ["+neon"],
         "mfloat-abi": "hard", "num-cores": 4}  # hard float: gnueabihf gcc rejects soft-float objects


def _model(nodes, x_shape, y_shape, weights):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype("float32"), n) for n, s in weights.items()]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _conv(c, f, hw, k, stride=1, groups=1, relu=True):
    out = (hw + 2 * (k // 2) - k) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c" if relu else "y"], pads=[k // 2] * 4,
                              strides=[stride, stride], group=groups)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    return _model(nodes, [1, c, hw, hw], [1, f, out, out], {"W": (f, c // groups, k, k), "B": (f,)})


def _conv_batchnorm(c, f, hw):
    rng = np.random.default_rng(0)
    arrays = {"W": rng.standard_normal((f, c, 3, 3)), "scale": rng.standard_normal(f), "bias": rng.standard_normal(f),
              "mean": rng.standard_normal(f), "var": rng.uniform(0.5, 2.0, f)}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1] * 4),
         helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, f, hw, hw])],
        [numpy_helper.from_array(a.astype("float32"), n) for n, a in arrays.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


CASES = {
    "conv3x3": _conv(8, 16, 10, 3),
    "conv7x7_stride2": _conv(3, 16, 20, 7, stride=2),  # strided rows: output channels are vectorised
    "conv1x1_stride2": _conv(16, 24, 9, 1, stride=2),  # SubsampleStridedPointwise, then a plain 1x1
    "conv1x1_width28": _conv(192, 32, 28, 1),  # long reduction, 7-of-8-lane rows: channel vectors
    "conv_batchnorm": _conv_batchnorm(8, 16, 10),  # batch norm decomposed and fused into the conv
    "swish": _model([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                    [1, 8, 10, 10], [1, 8, 10, 10], {}),  # FastSigmoid's fast_exp
    "conv3x3_stride2": _conv(8, 12, 9, 3, stride=2),
    "conv1x1": _conv(16, 24, 7, 1, relu=False),
    "conv_width13": _conv(8, 16, 13, 3),  # 13 fills no vector: output channels are vectorised
    "conv1x1_width17": _conv(32, 16, 17, 1),  # pixel rows: full tiles and a smaller last one
    "conv_channels29": _conv(3, 29, 20, 3, stride=2),  # 29 channels: channel tiles and a smaller last one
    "depthwise": _conv(16, 16, 12, 3, groups=16),
    "depthwise_stride2": _conv(16, 16, 12, 3, stride=2, groups=16),  # its padded copy in two planes
    "grouped": _conv(8, 12, 6, 3, groups=4),
    "gemm": _model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)], [1, 40], [1, 24],
                   {"W": (24, 40), "B": (24,)}),
    "matmul": _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [6, 20], [6, 16], {"W": (20, 16)}),
    "maxpool": _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])],
                      [1, 8, 11, 11], [1, 8, 5, 5], {}),
    "maxpool_narrow": _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])],
                             [1, 8, 7, 7], [1, 8, 3, 3], {}),  # rows of 3: a register tile
    # ceil mode that adds no window (dropped) and one that adds a window (kept)
    "maxpool_ceil_exact": _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                   ceil_mode=1)], [1, 8, 11, 11], [1, 8, 5, 5], {}),
    "avgpool_ceil_exact": _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                   pads=[1] * 4, ceil_mode=1)], [1, 8, 11, 11], [1, 8, 6, 6], {}),
    "maxpool_ceil_extra": _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                   ceil_mode=1)], [1, 8, 12, 12], [1, 8, 6, 6], {}),
    "avgpool": _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                      [1, 8, 8, 8], [1, 8, 4, 4], {}),
    "global_avgpool": _model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [1, 24, 7, 7],
                             [1, 24, 1, 1], {}),
    "global_avgpool_8x8": _model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [1, 24, 8, 8],
                                 [1, 24, 1, 1], {}),  # runs of 64: vector partial sums
    # elementwise: the whole nest one flat vector loop; a per-channel operand: each channel's map
    "add": _model([helper.make_node("Add", ["x", "W"], ["y"])], [1, 12, 8, 8], [1, 12, 8, 8], {"W": (1, 12, 8, 8)}),
    "channel_scale": _model([helper.make_node("Mul", ["x", "W"], ["y"])], [1, 12, 8, 8], [1, 12, 8, 8], {"W": (1, 12, 1, 1)}),
    "row_scale": _model([helper.make_node("Mul", ["x", "W"], ["y"])], [1, 4, 8, 16], [1, 4, 8, 16], {"W": (1, 1, 1, 16)}),
    # uneven parts (4, 3, 5 channels); maps of 36 (left to LLVM) and 64 (unrolled vector steps)
    "concat": _model([helper.make_node("Concat", ["x", "A", "B"], ["y"], axis=1)], [1, 4, 6, 6], [1, 12, 6, 6],
                     {"A": (1, 3, 6, 6), "B": (1, 5, 6, 6)}),
    "concat_8x8": _model([helper.make_node("Concat", ["A", "x", "B"], ["y"], axis=1)], [1, 4, 8, 8],
                         [1, 12, 8, 8], {"A": (1, 3, 8, 8), "B": (1, 5, 8, 8)}),
    "transpose": _model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], [1, 4, 8, 16], [1, 8, 16, 4], {}),
}


def _run(mod, pipeline, x):
    exe = tvm.compile(mod, HOST) if pipeline is None else tvm.compile(mod, HOST, relax_pipeline=pipeline)
    out = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return (out[0] if isinstance(out, tvm.ir.Array) else out).numpy()


def _check_equal(mod, x):
    expected = _run(mod, None, x)
    got = _run(mod, lowering_pipeline(plan_memory="tvm", fuse=True, schedule_target=HOST), x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_unscheduled_build(name):
    mod = frontend.import_onnx(CASES[name])
    (_, shape, _), = frontend.input_specs(mod)
    _check_equal(mod, np.random.default_rng(1).standard_normal(shape).astype("float32"))


def _schedules(target=HOST):
    """The scheduling passes as lowering_pipeline runs them: the constant weights marked first."""
    return [relax.transform.AttachAttrLayoutFreeBuffers(), kernels.default_schedule_pass(target)]


def _scheduled_text(name):
    mod = frontend.import_onnx(CASES[name])
    with HOST:
        mod = tvm.transform.Sequential(
            [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
             relax.transform.FuseOps(), relax.transform.FuseTIR(), *_schedules()]
        )(mod)
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return "\n".join(f.script() for f in funcs if int(f.attrs.get("tirx.is_scheduled", 0)) == 1)


def test_wide_pool_is_left_to_llvm():
    """Rows of 5 outputs, wider than HOST's 4 lanes: the window loops stay as legalized, for
    LLVM to vectorize."""
    text = _scheduled_text("maxpool")
    assert "pool_max" in text and "T.vectorized" not in text and 'scope="local"' not in text


def test_contiguous_mean_sums_vector_partials():
    text = _scheduled_text("global_avgpool_8x8")
    assert "_rf" in text and "T.vectorized" in text
    assert "x_global" not in text  # the activation is not repacked at every call


@pytest.mark.parametrize("name", ["conv3x3", "depthwise", "gemm", "maxpool_narrow"])
def test_reduction_gets_register_tile(name):
    text = _scheduled_text(name)
    assert "T.vectorized" in text and 'scope="local"' in text


def _scheduled_script(name):
    mod = frontend.import_onnx(CASES[name])
    with HOST:
        mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), *_schedules()])(mod)
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return "\n".join(f.script() for f in funcs if int(f.attrs.get("tirx.is_scheduled", 0)) == 1)


@pytest.mark.parametrize("name, fused, elements", [
    ("add", "ax0_ax1_ax2_ax3_fused", 12 * 8 * 8),  # every buffer walked in order: one loop over all
    ("channel_scale", "ax2_ax3_fused", 8 * 8),  # the scale is per channel: each channel's pixels
    ("row_scale", None, 16),  # the scale follows the row: rows stay apart, left to LLVM
    ("transpose", None, 4),  # indices that are not the loops': nothing to fuse
])
def test_elementwise_loops_fused_where_every_buffer_is_contiguous(name, fused, elements):
    lanes = kernels.vector_lanes(HOST)
    loops = [line.strip() for line in _scheduled_script(name).splitlines() if line.strip().startswith("for ")]
    if fused is None:
        assert not any("_fused" in line for line in loops)
        return
    assert elements % (4 * lanes) == 0  # so: vectorised in unrolled steps of four vectors
    assert loops[-2:] == [f"for {fused}_1 in T.unroll(T.int64(4)):", f"for {fused}_2 in T.vectorized(T.int64({lanes})):"]
    assert f"{fused}_0" in loops[-3] and f"T.int64({elements // (4 * lanes)})" in loops[-3]


@pytest.mark.parametrize("name", ["concat", "concat_8x8"])
def test_concatenation_is_one_plain_copy_per_input(name):
    """The loop over channels is split at the inputs' boundaries (4, 3, 5): three copies."""
    text = _scheduled_script(name)
    assert text.count("_partition\")") == 3
    assert "in range(T.int64(4), T.int64(7))" in text or "in range(T.int64(3), T.int64(7))" in text


def test_strided_depthwise_reads_its_padded_copy_in_planes():
    """Stride 2 along the vectorised row: the 14-wide padded rows are stored as 2 planes of 7, so
    the convolution's vector loads are contiguous."""
    text = _scheduled_script("depthwise_stride2")
    assert "T.int64(14), T.int64(2), T.int64(7)))" in text
    conv = next(line for line in text.splitlines() if "T.reads(" in line and "pad_temp[" in line)
    assert conv.split("pad_temp[")[1].split("]")[0].split(", ")[-1] == "v_rx // T.int64(2) + v_xx"


def test_vector_lanes_follow_the_target():
    assert kernels.vector_lanes(tvm.target.Target(AARCH64)) == 4
    assert kernels.vector_lanes(tvm.target.Target(ARMV7)) == 4
    assert kernels.vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == 8
    assert kernels.vector_lanes(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})) == 16
    assert kernels.num_cores(tvm.target.Target(AARCH64)) == 4


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_model_matches_unscheduled_build(name):
    info = zoo.MODELS[name]
    mod = frontend.import_onnx(zoo.build(name, input_size=info.test_input_size, seed=0))
    (_, shape, _), = frontend.input_specs(mod)
    _check_equal(mod, np.random.default_rng(2).standard_normal(shape).astype("float32"))


@pytest.mark.parametrize("target, compiler, machine", [
    (AARCH64, "aarch64-linux-gnu-gcc", 183),  # EM_AARCH64
    (ARMV7, "arm-linux-gnueabihf-gcc", 40),  # EM_ARM
])
def test_arm_build_links(tmp_path, target, compiler, machine):
    target = tvm.target.Target(target)
    mod = frontend.import_onnx(CASES["conv3x3"])
    exe = tvm.compile(mod, target, relax_pipeline=lowering_pipeline(plan_memory="tvm", fuse=True, schedule_target=target))
    path = tmp_path / "m.so"
    exe.export_library(str(path), fcompile=cc.cross_compiler(compiler))
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == machine


def test_rewrites_before_legalization():
    """FastSigmoid, SubsampleStridedPointwise, DropRedundantCeilMode and the batch-norm decomposition
    really rewrite."""
    swish = frontend.import_onnx(CASES["swish"])
    assert "R.sigmoid" in swish.script()
    rewritten = FastSigmoid(swish).script()
    assert "R.sigmoid" not in rewritten and "fast_sigmoid" in rewritten
    strided = frontend.import_onnx(CASES["conv1x1_stride2"])
    rewritten = SubsampleStridedPointwise(strided).script()
    assert "R.strided_slice" in rewritten and "strides=[2, 2]" not in rewritten.split("R.nn.conv2d")[1]
    unstrided = frontend.import_onnx(CASES["conv3x3_stride2"])  # 3x3: needs the pixels between
    assert "R.strided_slice" not in SubsampleStridedPointwise(unstrided).script()
    for case, ceil in (("maxpool_ceil_exact", False), ("avgpool_ceil_exact", False), ("maxpool_ceil_extra", True)):
        pool = frontend.import_onnx(CASES[case])
        assert "ceil_mode=True" in pool.script()
        assert ("ceil_mode=True" in DropRedundantCeilMode(pool).script()) == ceil, case
    with HOST:
        fused = tvm.transform.Sequential(fusion_passes())(frontend.import_onnx(CASES["conv_batchnorm"]))
    names = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(names) == 1 and "conv2d" in names[0], names  # the batch norm is part of the conv's kernel
    assert "divide" not in names[0] and "subtract" not in names[0], names  # folded into weights and bias


def _lowered_main(case):
    with HOST:
        mod = lowering_pipeline(plan_memory="tvm", fuse=True, schedule_target=HOST)(frontend.import_onnx(CASES[case]))
    return mod, mod["main"].script()


@pytest.mark.parametrize("case, weight", [("conv_width13", (16, 8, 3, 3)), ("gemm", (40, 24))])
def test_weights_are_packed_once_at_build_time(case, weight):
    """Weights read along the vector axis come packed in vector-tile blocks (a conv's output
    channels, a dense layer's outputs: W[o, ...] -> W[o // t, ..., o % t]) as constants: main
    calls no packing kernel at run time."""
    mod, main = _lowered_main(case)
    assert "_prepacked(" in main and "_weight_prepack(" not in main, main
    outputs = weight[0] if len(weight) == 4 else weight[-1]
    rest = weight[1:] if len(weight) == 4 else weight[:-1]
    shapes = [tuple(c.value.shape) for c in _constants(mod["main"]) if hasattr(c.value, "shape")]
    packed = [s for s in shapes if len(s) == len(weight) + 1 and s[1:-1] == rest and s[0] * s[-1] == outputs
              and s[-1] < outputs]
    assert packed, shapes


def _constants(func):
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, tvm.ir.GenericConst) else None)
    return found


def test_cheap_epilogue_is_computed_in_the_write_back():
    """Bias and ReLU run in the convolution's write-back: the kernel keeps no full-size buffer but
    its padded input (and the packed weights); swish (which calls exp) keeps its own pass."""
    with HOST:
        fused = tvm.transform.Sequential(fusion_passes() + _schedules())
        conv = fused(frontend.import_onnx(CASES["conv3x3"]))
    text = "\n".join(f.script() for _, f in conv.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    allocations = [line for line in text.splitlines() if "T.sblock_alloc_buffer(" in line]
    full_size = [line for line in allocations if 'scope="local"' not in line
                 and not line.strip().startswith(("pad_temp", "param_0_global"))]  # packed weights: split out at build
    assert allocations and not full_size, allocations
    assert not kernels._cheap_epilogue("T.exp(x)") and kernels._cheap_epilogue("T.max(x, T.float32(0.0))")


@pytest.mark.parametrize("tail", [False, True])
def test_register_tiles_fit_the_vector_registers(tail):
    """Accumulators + loaded vectors + one broadcast <= 16 registers (one more and LLVM spills the
    accumulators at every step); rows divide their extent unless a last smaller tile is allowed."""
    for lanes in (4, 8):
        for vec_extent in (7, 8, 13, 16, 32, 56, 64, 96):
            for reg_extent in range(1, 40):
                rows, width = kernels._tile_sizes(reg_extent, vec_extent, lanes, tail=tail)
                vectors = max(1, width // lanes)
                assert vec_extent % width == 0 and rows * vectors + vectors + 1 <= 16, (reg_extent, vec_extent)
                assert tail or reg_extent % rows == 0, (reg_extent, rows)
    assert kernels._tile_sizes(17, 64, 8, tail=False)[0] == 1  # 17 is prime: one row per tile
    assert kernels._tile_sizes(17, 64, 8, tail=True)[0] > 4  # full tiles and a smaller last one


def test_awkward_width_gets_full_tiles_and_a_last_one():
    """A 1x1 conv on 17x17: the pixel-row tile loop carries TVM's partition hint (the kernel
    indexed in int32 for LoopPartition), and the conv reads its input in place (no copy)."""
    mod, _ = _lowered_main("conv1x1_width17")
    kernel = "\n".join(f.script() for gv, f in mod.functions_items()
                       if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint and "weight_prepack" not in gv.name_hint)
    assert "pragma_loop_partition_hint" in kernel, kernel
    assert "T.int64" not in kernel and "pad_temp" not in kernel, kernel


AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})


def _run_kernel(kernel, target, arrays):
    func = tvm.compile(kernels.narrow_partitioned_kernels(kernel), target)
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    func(*tensors)
    return [t.numpy() for t in tensors]


@pytest.mark.parametrize("name", ["conv3x3", "conv1x1_width28", "conv_width13", "conv7x7_stride2", "depthwise"])
def test_every_knob_setting_computes_the_same_kernel(name):
    """Tuning measures the default schedule under each setting of knob_space (vector width and
    axis, registers, loop order): each distinct schedule computes what the unscheduled kernel does."""
    settings = kernels.knob_space(AVX2)
    assert settings[0] == kernels.Knobs() and len(set(settings)) == len(settings)
    mod = kernel_module(frontend.import_onnx(CASES[name]), AVX2)
    rng = np.random.default_rng(3)
    variants = 0
    for _, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or "conv2d" not in func.script() and "matmul" not in func.script():
            continue
        kernel = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        arrays = [rng.standard_normal([int(d) for d in arg.shape]).astype(str(arg.dtype))
                  for arg in ArgInfo.from_prim_func(func)]
        expected = _run_kernel(kernel, AVX2, arrays)
        for knobs in kernels.distinct_knobs(kernel, AVX2):
            scheduled = kernels.default_schedule(tvm.s_tir.Schedule(kernel), AVX2, knobs).mod
            for got, want in zip(_run_kernel(scheduled, AVX2, arrays), expected):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()),
                                           err_msg=str(knobs))
            variants += 1
    assert variants > 1, "no kernel had more than its default schedule to measure"


@pytest.mark.parametrize("extent", [7, 13])
@pytest.mark.parametrize("lanes", [16, 8, 4])
def test_register_rows_leave_no_one_row_last_tile(extent, lanes):
    """A last tile of one row runs a step of a few FMAs, each waiting on the last: a tiling of
    the rows into nearly equal tiles (7 = 4 + 3) keeps every step busy."""
    rows, width = kernels._tile_sizes(extent, 4 * lanes, lanes, tail=True)
    assert width % lanes == 0 and extent % rows != 1
    assert kernels._step_cycles(extent % rows or rows, width // lanes, lanes) <= kernels._step_cycles(rows, width // lanes, lanes)


def _update_tile(model, target, block: str) -> tuple[str, int]:
    """The vectorised loop line and the unrolled rows around the update block `block` of
    `model`'s kernel as the scheduling passes leave it for `target`."""
    with target:
        mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), *_schedules(target)])(frontend.import_onnx(model))
    lines = next(fn.script() for _, fn in mod.functions_items()
                 if isinstance(fn, tvm.tirx.PrimFunc) and block in fn.script()).splitlines()
    update = next(i for i, line in enumerate(lines) if f'{block}")' in line)
    nest = []
    for line in reversed(lines[:update]):
        if "T.unroll" not in line and "T.vectorized" not in line:
            break
        nest.append(line.strip())
    return nest[0], int(np.prod([int(line.split("T.int64(")[1].split(")")[0]) for line in nest[1:]] or [1]))


@pytest.mark.parametrize("mcpu", ["skylake-avx512", "haswell"])
@pytest.mark.parametrize("c, f, hw, k, stride, groups", [
    (64, 96, 14, 3, 1, 1), (16, 32, 56, 3, 1, 1), (192, 64, 28, 1, 1, 1), (32, 48, 13, 3, 1, 1),
    (3, 32, 30, 7, 2, 1), (48, 48, 20, 3, 1, 48), (96, 96, 14, 5, 2, 96), (256, 1000, 13, 1, 1, 1),
    (3, 29, 40, 3, 2, 1), (128, 128, 28, 3, 1, 1),
])
def test_conv_tiling_is_the_schedule_the_rule_gives(mcpu, c, f, hw, k, stride, groups):
    """kernels.conv_tiling (the cost model's view of a convolution's kernel, from its shape)
    names the vector axis, vector tile and register rows of the scheduled update loop nest."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
    vector_line, rows = _update_tile(_conv(c, f, hw, k, stride, groups, relu=False), target, "conv2d_nchw_update")
    out = (hw + 2 * (k // 2) - k) // stride + 1
    channels, vector_tile, register_rows, fill = kernels.conv_tiling(f, out, out, c, hw, k, stride, groups > 1,
                                                                     kernels.vector_lanes(target))
    assert vector_line.startswith("for ff_" if channels else "for xx_")
    assert f"T.vectorized(T.int64({vector_tile}))" in vector_line
    assert rows == register_rows and 0 < fill <= 1


@pytest.mark.parametrize("mcpu", ["skylake-avx512", "haswell"])
@pytest.mark.parametrize("rows, k, cols", [(1, 144, 417), (1, 144, 608), (1, 512, 1000), (1, 64, 752), (3, 32, 96)])
def test_matmul_tiling_is_the_schedule_the_rule_gives(mcpu, rows, k, cols):
    """kernels.matmul_tiling names the vector tile and register rows of a scheduled matmul's
    update loop nest: a classifier of 417 outputs vectorised 3 wide, one of 1000 10 wide."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
    gemm = _model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)], [rows, k], [rows, cols],
                  {"W": (cols, k), "B": (cols,)})
    vector_line, unrolled = _update_tile(gemm, target, "matmul_update")
    _, vector_tile, register_rows, fill = kernels.matmul_tiling(rows, cols, kernels.vector_lanes(target))
    assert vector_line.startswith("for i1_") and f"T.vectorized(T.int64({vector_tile}))" in vector_line
    assert unrolled == register_rows and cols % vector_tile == 0 and 0 < fill <= 1
