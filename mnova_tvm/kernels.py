"""Default CPU schedules for untuned Relax models.

TVM 0.27 legalizes conv2d/matmul/pooling into plain loop nests and, on CPU, schedules none of
them (DLight only has GEMV and reduction rules), so an untuned model runs its convolutions at
scalar speed.  This module gives every PrimFunc a deterministic schedule without search:

* a reduction block (conv2d of any group count, matmul/dense, pooling, mean) gets a register
  tile: the image row is vectorised by the target's vector width, or the output channels are
  when the row is strided or fills the lanes badly (13, 27, 28) or the convolution is 1x1; the
  rows of the tile are output channels the input does not depend on (each loaded input vector
  feeds all of them), plus image rows when one vector spans the row, or output pixels, in full
  tiles and a smaller last one when their count has no good divisor (17, 7); the accumulators,
  the loaded vectors and a broadcast fit the vector registers, so LLVM spills none; the outer
  output loops are fused, ordered so the larger of input and weights stays in cache, and run in
  parallel; weights read along the vector axis are packed in blocks of one vector tile (folded
  into the constants at build time), and a cheap epilogue (bias, ReLU, clip) is computed in the
  tile's write-back;
* a reduction over contiguous runs of an activation (a global average pool, a mean) sums each
  run in vector partial sums; a pooling window over rows longer than one vector is left to
  LLVM's loop vectorizer, its outer loops parallel; activations are never repacked per call;
* chains of elementwise blocks (bias, batch norm, activation) are computed in one pass;
* an injective block (pad, bias add, activation, transpose) has the innermost loops that walk
  every buffer contiguously fused into one flat loop, vectorised in unrolled steps of four
  vectors when its length allows (LLVM vectorises the rest), and its leading loops run in
  parallel.

transform.lowering_pipeline(schedule_target=...) runs ``default_schedule_pass(target)`` after
legalization, between AttachAttrLayoutFreeBuffers (which marks the constant weights) and
SplitLayoutRewritePreproc + FoldConstant (which pack them once) and narrow_partitioned_kernels_pass;
transform.kernel_module and transform.schedule_passes give the same order to a pipeline of your own.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, sym, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.target import Target, codegen

_DATA_PAR = 0
_COMM_REDUCE = 2
# Loop annotation that has TVM's LoopPartition split a loop into its guard-free part and the rest.
_PARTITION_HINT = "pragma_loop_partition_hint"
# Vector registers a micro-kernel may use by default: AVX2 and 32-bit NEON have 16; aarch64 NEON and
# AVX-512 have 32, which tuning tries (Knobs.registers): by default they made resnet18 9 % slower on Zen 5.
_VECTOR_REGISTERS = 16
# Below this many output elements a parallel loop costs more than it saves.
_MIN_PARALLEL_ELEMENTS = 4096


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """Lanes of one SIMD register for ``dtype_bits`` values: AVX-512, AVX2, SSE or NEON."""
    target = Target(target) if not isinstance(target, Target) else target
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith(("aarch64", "arm", "thumb")):
        bits = 128
    elif codegen.target_has_features("avx512f", target):
        bits = 512
    elif codegen.target_has_features("avx2", target):
        bits = 256
    else:
        bits = 128
    return max(1, bits // dtype_bits)


def vector_registers(target: Target) -> int:
    """Vector registers of the target: 32 on aarch64 and AVX-512, 16 on AVX2, SSE and 32-bit NEON."""
    target = Target(target) if not isinstance(target, Target) else target
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith("aarch64") or not triple.startswith(("arm", "thumb")) and codegen.target_has_features(
            "avx512f", target):
        return 32
    return 16


@dataclass(frozen=True)
class Knobs:
    """The choices of the reduction rule that tuning varies; the defaults are the rule's own.

    vector_bits: vector width used (None = the target's; 256 on AVX-512 runs AVX2-width tiles);
    registers: vector registers a micro-kernel may fill; vector_axis: "auto", or "row" / "channel"
    to vectorise the image row / the output channels where that is possible; channels_inner:
    None = by sizes, True / False = the channel tiles run innermost of the outer loops (the input
    stays in cache) or outermost (each weight tile stays).
    """

    vector_bits: int | None = None
    registers: int = _VECTOR_REGISTERS
    vector_axis: str = "auto"
    channels_inner: bool | None = None


def knob_space(target: Target) -> list[Knobs]:
    """Every combination of knobs worth measuring on ``target``, the defaults first."""
    target = Target(target) if not isinstance(target, Target) else target
    full_bits = 32 * vector_lanes(target)
    widths = [None] + ([full_bits // 2] if full_bits > 128 else [])
    registers = sorted({_VECTOR_REGISTERS, vector_registers(target)})
    return [Knobs(bits, regs, axis, inner) for bits, regs, axis, inner in
            itertools.product(widths, registers, ("auto", "row", "channel"), (None, True, False))]


def num_cores(target: Target) -> int:
    """The target's "num-cores" (1 when it is not given)."""
    return int(target.attrs.get("num-cores", 1) or 1)


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _plain_loops(sch: s_tir.Schedule, block) -> tuple[list, list[int], list[int]] | None:
    """The block's loops, extents and iter kinds if each loop binds exactly one iter var in order."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars):
        return None
    extents, kinds = [], []
    for loop, iv in zip(loops, stmt.iter_vars):
        extent = sch.get(loop).extent
        if not isinstance(extent, tirx.IntImm) or not isinstance(iv.dom.extent, tirx.IntImm):
            return None
        if int(extent) != int(iv.dom.extent):
            return None
        if iv.iter_type not in (_DATA_PAR, _COMM_REDUCE):
            return None
        extents.append(int(extent))
        kinds.append(int(iv.iter_type))
    return loops, extents, kinds


def _fill(extent: int, lanes: int) -> float:
    """Share of vector lanes a tile of ``extent``'s largest divisor up to ``lanes`` keeps busy."""
    return _lane_fill(_largest_divisor(extent, lanes), lanes)


def _lane_fill(width: int, lanes: int) -> float:
    """Share of the lanes busy in the vectors a loop ``width`` wide takes."""
    return width / (-(-width // lanes) * lanes)


def _strided(stmt, axis: int) -> bool:
    """Whether a read of the block steps through memory by more than one element along ``axis``
    (a strided convolution's input along the output width): vector loads become gathers."""
    var = stmt.iter_vars[axis].var
    return any(region.region and _uses(region.region[-1].min, var) and _row_step(region.region, var) != 1
               for region in stmt.reads)


def _row_step(region, var) -> int | None:
    """Elements a read steps along its last dimension per step of ``var``; None when not constant."""
    coefficients = sym.detect_linear_equation(region[-1].min, [var])
    return int(coefficients[0]) if coefficients and isinstance(coefficients[0], tirx.IntImm) else None


def _indexes_directly(sch, stmt, axis: int) -> bool:
    """Whether vector loads along ``axis`` need no gathers: every read ignores it, indexes its last
    dimension by it, or is a constant with one dimension indexed by it alone (a conv weight's
    output channel), which _pack_weights packs innermost."""
    var = stmt.iter_vars[axis].var
    constant = _constant_params(sch)
    for region in stmt.reads:
        dims = [j for j, r in enumerate(region.region) if _uses(r.min, var)]
        if not dims or dims == [len(region.region) - 1]:
            continue
        if not any(region.source.same_as(c) for c in constant):
            return False
        if len(dims) > 1 or not region.region[dims[0]].min.same_as(var):
            return False
    return True


# A reduction this long amortises an accumulator tile written back across channels (a strided store
# per element): below it, 7-of-8-lane vectors along the image row are the cheaper choice.
_MIN_REDUCTION_FOR_CHANNEL_VECTORS = 128
# Above this the weights a channel-vector tile sweeps per output pixel fall out of cache (512->512
# 3x3 on 28x28: 2.4x slower than 7-lane vectors along the row).
_MAX_CHANNEL_VECTOR_WEIGHT_BYTES = 2 * 2**20


def _vector_axis(sch, block, spatial: list[int], extents: list[int], reduction: int, pointwise: bool,
                 lanes: int, choice: str = "auto") -> int:
    """The innermost output axis (the image row), unless its reads are strided or its extent (13,
    27, 28 ...) leaves lanes idle, and the output channels fill every lane without gathers. A
    pointwise block (one reduction axis: a 1x1 convolution, a matmul) always takes the channels
    then: its rows of output pixels, split into full tiles and a last one, beat 7-of-8-lane row
    vectors (48->128 on 28x28: 2x). ``choice`` "row" or "channel" (Knobs.vector_axis) takes that
    axis where the channels can be vectorised at all."""
    stmt = sch.get(block)
    inner = spatial[-1]
    channels = [i for i in spatial[:-1] if _fill(extents[i], lanes) >= 1.0 and _indexes_directly(sch, stmt, i)]
    if channels and choice != "auto":
        return inner if choice == "row" else channels[-1]
    strided = _strided(stmt, inner)
    if not channels or _fill(extents[inner], lanes) >= 1.0 and not strided:
        return inner
    channel = channels[-1]
    if strided or _fill(extents[inner], lanes) < 0.75:
        return channel
    worth_it = pointwise or extents[inner] >= 2 * lanes and reduction >= _MIN_REDUCTION_FOR_CHANNEL_VECTORS
    return channel if worth_it and 4 * reduction * extents[channel] <= _MAX_CHANNEL_VECTOR_WEIGHT_BYTES else inner


def _constant_params(sch) -> list:
    """Buffers of the parameters bound to constant weights (AttachAttrLayoutFreeBuffers marks them)."""
    func = sch.mod["main"]
    free = func.attrs.get("layout_free_buffers", []) if func.attrs is not None else []
    return [func.params[int(i)] for i in free]


def _pack_weights(sch, block, axis: int, tile: int) -> None:
    """Pack the weights read along the vector ``axis`` in blocks of ``tile`` values, innermost:
    W[o, i, kh, kw] -> W[o // tile, i, kh, kw, o % tile] (a conv's output channels), W[k, n] ->
    W[n // tile, k, n % tile] (a dense layer's outputs). The vector loads of one tile are then
    contiguous and the weights one tile sweeps a single dense stream (a 9216x4096 dense layer read
    row by row misses the TLB at every step). The copy is marked as a layout-rewrite preprocess:
    lowering_pipeline splits it out of the kernel and folds it into the constant weights at build
    time. A parameter that is not constant (an activation) is never packed: its copy would run at
    every call (a global average pool of 96x112x112 packed: 6.6x slower than strided loads)."""
    stmt = sch.get(block)
    var = stmt.iter_vars[axis].var
    allocated = list(sch.get(get_root_block(sch)).alloc_buffers)
    constant = _constant_params(sch)
    for index, region in enumerate(stmt.reads):
        if any(region.source.same_as(a) for a in allocated) or len(region.region) < 2:
            continue
        dims = [j for j, r in enumerate(region.region) if _uses(r.min, var)]
        if len(dims) != 1 or not region.region[dims[0]].min.same_as(var):
            continue
        dim = dims[0]
        if not any(region.source.same_as(c) for c in constant) or (
                dim == len(region.region) - 1 and int(region.source.shape[dim]) <= tile):
            continue
        rest = [j for j in range(len(region.region)) if j != dim]
        copy = sch.cache_read(block, index, "global")
        sch.annotate(copy, "meta_schedule.layout_rewrite_preproc", True)
        index_map = tirx.IndexMap.from_func(
            lambda *idx: [idx[dim] // tile] + [idx[j] for j in rest] + [idx[dim] % tile], ndim=len(region.region))
        sch.transform_layout(block, ("read", index), index_map)


def _uses(expr, var) -> bool:
    return any(v.same_as(var) for v in tirx.analysis.undefined_vars(expr))


def _tile_score(rows: int, vectors: int, free_broadcasts: bool = False) -> float:
    """FMAs per load of a rows x vectors micro-kernel step; with ``free_broadcasts`` only the
    vector loads count (and more FMAs per step break ties)."""
    if free_broadcasts:
        return rows + 1e-3 * rows * vectors
    return rows * vectors / (rows + vectors)


# A micro-kernel step as a CPU core runs it: two loads a cycle, FMAs on 512 bits a cycle (two of
# AVX2 or NEON width, one of AVX-512), and no step shorter than six FMAs take (their latency and
# the loop's overhead; measured on AVX-512: 4 + 3 rows beat 5 + 2). Rates within 5 % tie.
_LOADS_PER_CYCLE, _FMA_BITS_PER_CYCLE, _MIN_STEP_FMAS, _RATE_TIE = 2, 512, 6, 0.95


def _step_cycles(rows: int, vectors: int, lanes: int) -> float:
    """Cycles of one reduction step of a rows x vectors tile: its loads or its FMAs, the longer."""
    fmas_per_cycle = min(2, _FMA_BITS_PER_CYCLE // (32 * lanes))
    return max((rows + vectors) / _LOADS_PER_CYCLE, max(rows * vectors, _MIN_STEP_FMAS) / fmas_per_cycle)


def embedded_broadcast(target: Target) -> bool:
    """Whether an FMA of ``target`` takes its broadcast operand straight from memory (x86 with
    AVX-512): a broadcast then costs neither a register nor a separate instruction."""
    target = Target(target) if not isinstance(target, Target) else target
    triple = str(target.attrs.get("mtriple", "") or "")
    return not triple.startswith(("aarch64", "arm", "thumb")) and codegen.target_has_features("avx512f", target)


def _tile_sizes(reg_extent: int, vec_extent: int, lanes: int, tail: bool = False,
                registers: int = _VECTOR_REGISTERS, free_broadcasts: bool = False) -> tuple[int, int]:
    """Register rows x vector width of the micro-kernel.

    Each step loads one vector per column vector and one broadcast per row and does rows x
    vectors FMAs, so the pair maximising useful FMAs per load wins among those whose accumulators,
    loaded vectors and one broadcast fit in the vector registers. One register more and LLVM
    spills accumulators to the stack at every step (3 x 4 tiles of a 1x1 conv with a clip
    epilogue: 2x slower than 6 x 2).
    The vector width divides its extent (a guarded vector loop measured 3x slower); the rows
    need not when ``tail``: the loop over row tiles is then partitioned into full tiles and one
    smaller last tile, each without a guard (17 output columns: 6 + 6 + 5 rows instead of 1).
    Tilings are ranked first by the vector FMAs per cycle their steps reach (_step_cycles), the
    last tile included, then by FMAs per load: a last tile of one row does two FMAs a step and
    waits on their latency (160->960 1x1 on 7x7: 6 + 1 rows x 2 vectors 1.14x slower than 4 + 3).
    With ``free_broadcasts`` (channel rows x image rows, AVX-512) the FMAs per load alone rank.
    """
    if vec_extent % lanes:
        vector_options = [(1, _largest_divisor(vec_extent, lanes))]
    else:
        # Several vectors: powers of two only, LLVM splits a 24-lane vector badly (8x slower);
        # with lanes == 1 the "vectors" are unrolled rows, any count.
        counts = (1, 2, 4) if lanes > 1 else range(1, 7)
        vector_options = [(k, k * lanes) for k in counts if vec_extent % (k * lanes) == 0]
    candidates = []  # (FMAs per cycle, FMAs per load, (rows, width))
    for rows in range(1, min(reg_extent, registers) + 1):
        if reg_extent % rows and not tail:
            continue
        full, rest = divmod(reg_extent, rows)
        for vectors, width in vector_options:
            if rows * vectors + vectors + 1 > registers:
                continue
            per_load = (full * rows * _tile_score(rows, vectors, free_broadcasts)
                        + rest * _tile_score(rest, vectors, free_broadcasts)) / reg_extent
            cycles = full * _step_cycles(rows, vectors, lanes) + (_step_cycles(rest, vectors, lanes) if rest else 0)
            candidates.append((0.0 if free_broadcasts else reg_extent * vectors / cycles, per_load, (rows, width)))
    if not candidates:
        return 1, vector_options[0][1]
    best_rate = max(rate for rate, _, _ in candidates)
    return max((c for c in candidates if c[0] >= _RATE_TIE * best_rate), key=lambda c: round(c[1], 9))[2]


@functools.lru_cache(maxsize=65536)
def conv_tiling(out_c: int, out_h: int, out_w: int, in_c: int, in_h: int, kernel: int, stride: int, depthwise: bool,
                lanes: int) -> tuple[int, int, int, float]:
    """The register tile the reduction rule gives a square NCHW convolution with default knobs,
    from its shape alone: (vector over channels 1 / over the image row 0, vector tile, register
    rows, share of vector lanes busy). The cost model's view of the kernel that runs, without
    building it; tests compare it with the schedule itself."""
    reduction = kernel * kernel * (1 if depthwise else in_c)
    pointwise = kernel == 1 and not depthwise
    channels_ok = not depthwise and _fill(out_c, lanes) >= 1.0  # a depthwise input is indexed by channel: gathers
    strided = stride > 1
    extents = {"c": out_c, "h": out_h, "w": out_w}
    if not channels_ok or _fill(out_w, lanes) >= 1.0 and not strided:
        vector = "w"
    elif strided or _fill(out_w, lanes) < 0.75:
        vector = "c"
    else:
        worth_it = pointwise or out_w >= 2 * lanes and reduction >= _MIN_REDUCTION_FOR_CHANNEL_VECTORS
        vector = "c" if worth_it and 4 * reduction * out_c <= _MAX_CHANNEL_VECTOR_WEIGHT_BYTES else "w"
    others = [a for a in "chw" if a != vector and extents[a] > 1]
    broadcast = [a for a in others if a == "c" and not depthwise and out_c >= 4]
    reg = max(broadcast or others, key=lambda a: (_largest_divisor(extents[a], 8), "chw".index(a))) if others else None
    channels_inner = reg is not None and in_c * in_h * in_h > reduction * extents[reg]
    last = "c" if reg in broadcast and (channels_inner or _largest_divisor(out_c, 8) < 4) else "w"  # innermost outer loop
    reg_tile, vec_tile = _tile_sizes(extents[reg] if reg else 1, extents[vector], lanes, tail=last == reg)
    rest = [a for a in others if a != reg]
    if vec_tile <= lanes and reg in broadcast and rest:
        reg_tile, group_tile = _tile_sizes(extents[reg], extents[rest[-1]], 1, tail=last == reg, free_broadcasts=lanes == 16)
        reg_tile *= group_tile
    return int(vector == "c"), vec_tile, reg_tile, _lane_fill(vec_tile, lanes)


@functools.lru_cache(maxsize=65536)
def matmul_tiling(rows: int, cols: int, lanes: int) -> tuple[int, int, int, float]:
    """conv_tiling's view of a matmul ([rows, k] x [k, cols]): its output columns are the
    vector axis whatever their count (the first input indexes its rows on its first dimension:
    gathers), and a count without a divisor of the vector width takes its largest divisor below
    it, so a classifier of 417 outputs runs 3 lanes wide and one of 1000 runs 10."""
    reg_tile, vec_tile = _tile_sizes(rows, cols, lanes)
    return 1, vec_tile, reg_tile, _lane_fill(vec_tile, lanes)


def _row_reduction(sch, block, extents, kinds, lanes: int) -> bool:
    """Whether the block reduces runs of an activation that lie contiguously in memory (a global
    average pool or a mean over the last axes) that split into vector partial sums."""
    stmt = sch.get(block)
    spatial = [i for i, k in enumerate(kinds) if k == _DATA_PAR]
    reduce = [i for i, k in enumerate(kinds) if k == _COMM_REDUCE]
    if not reduce or max(spatial, default=-1) > min(reduce) or len(stmt.reads) != 1:
        return False
    region = stmt.reads[0].region
    if len(region) < len(reduce) or any(stmt.reads[0].source.same_as(c) for c in _constant_params(sch)):
        return False
    tail = region[len(region) - len(reduce):]
    shape = stmt.reads[0].source.shape[len(region) - len(reduce):]
    run = math.prod(extents[i] for i in reduce)
    return (all(r.min.same_as(stmt.iter_vars[i].var) and int(dim) == extents[i] for r, i, dim in zip(tail, reduce, shape))
            and _partial_sums(run, lanes) is not None)


def _partial_sums(run: int, lanes: int) -> int | None:
    """How many partial sums a run of ``run`` contiguous values is added up in: two vectors, one,
    or a part of one down to four lanes (14x14 = 4 x 49: 4.7x faster than channel vectors)."""
    return next((width for width in (2 * lanes, lanes, lanes // 2, lanes // 4)
                 if width >= 4 and run % width == 0 and run >= 2 * width), None)


def _schedule_row_reduction(sch, block, loops, extents, kinds, lanes, cores) -> None:
    """Sum each contiguous run in vector partial sums (rfactor), added up at the end: a global
    average pool of 96x112x112 ran 22x faster than channel vectors over the packed input."""
    reduce = [i for i, k in enumerate(kinds) if k == _COMM_REDUCE]
    run = math.prod(extents[i] for i in reduce)
    factor = _partial_sums(run, lanes)
    fused = sch.fuse(*[loops[i] for i in reduce])
    _, lane = sch.split(fused, [None, factor])
    partial = sch.rfactor(lane, 0)
    partial_loops = sch.get_loops(partial)
    outputs = math.prod(extents[i] for i, k in enumerate(kinds) if k == _DATA_PAR)
    if cores > 1 and outputs * run >= 16 * _MIN_PARALLEL_ELEMENTS and len(partial_loops) > 2:
        sch.parallel(sch.fuse(*partial_loops[:-2]))
    sch.vectorize(partial_loops[-1])
    init = sch.decompose_reduction(partial, sch.get_loops(partial)[-2])
    sch.vectorize(sch.get_loops(init)[-1])


def _wide_pool(sch, block, extents, kinds, lanes: int) -> bool:
    """Whether the block is a pooling window (a reduction over activations only, each read
    indexed by every output axis) over output rows longer than one vector. LLVM's loop vectorizer runs
    those better than a register tile, with interleaved loads for the strided window (max pool
    3x3 stride 2 to 55x55: 2.2x faster); narrower rows (13) keep the tile (2.4x faster)."""
    stmt = sch.get(block)
    constant = _constant_params(sch)
    spatial = [i for i, k in enumerate(kinds) if k == _DATA_PAR]
    if not spatial or any(r.source.same_as(c) for r in stmt.reads for c in constant):
        return False
    indexed = all(any(_uses(dim.min, stmt.iter_vars[i].var) for dim in read.region)
                  for read in stmt.reads for i in spatial if extents[i] > 1)  # a conv's input ignores its channels
    return indexed and extents[spatial[-1]] > lanes


def _schedule_wide_pool(sch, loops, extents, kinds, cores) -> None:
    """The window loops as legalized, their outer loops (batch, channels) in parallel."""
    outer = [loop for loop, kind in zip(loops, kinds) if kind == _DATA_PAR][:-2]
    outputs = math.prod(e for e, kind in zip(extents, kinds) if kind == _DATA_PAR)
    if cores > 1 and outer and outputs >= _MIN_PARALLEL_ELEMENTS:
        sch.parallel(sch.fuse(*outer))


def _schedule_reduction(sch, block, loops, extents, kinds, lanes, cores, knobs: Knobs,
                        free_broadcasts: bool = False) -> None:
    """Register-tile a spatial x reduction block: S-outer (parallel), R, S-reg (unrolled), S-vec."""
    spatial = [i for i, k in enumerate(kinds) if k == _DATA_PAR]
    reduce = [i for i, k in enumerate(kinds) if k == _COMM_REDUCE]
    if not spatial or not reduce or max(spatial) > min(reduce):
        return
    reduction = math.prod(extents[i] for i in reduce)
    pointwise = sum(extents[i] > 1 for i in reduce) == 1
    vec_axis = _vector_axis(sch, block, spatial, extents, reduction, pointwise, lanes, knobs.vector_axis)
    others = [i for i in spatial if i != vec_axis and extents[i] > 1]
    stmt = sch.get(block)
    # Rows of the micro-kernel: an axis the data read ignores (the output channels), so each loaded
    # input vector serves every row; otherwise the axis whose tile fills the registers best.
    broadcast = [i for i in others if not any(_uses(r.min, stmt.iter_vars[i].var) for r in stmt.reads[0].region)
                 and extents[i] >= 4]
    reg_axis = (
        max(broadcast or others, key=lambda i: (_largest_divisor(extents[i], 8), i)) if others else None
    )
    # When the input outweighs the weights, the rows' channel tiles run innermost of the outer
    # loops: the input a tile reads stays in cache while every channel tile uses it (64->64 3x3 on
    # 224x224: 9x faster than a pass over the image per tile). Otherwise each weight tile stays.
    order = list(spatial)
    input_elements = math.prod(int(extent) for extent in stmt.reads[0].source.shape)
    channels_inner = knobs.channels_inner
    if channels_inner is None:
        channels_inner = input_elements > reduction * extents[reg_axis] if reg_axis is not None else False
    # Channel counts with no divisor of 4 or more (29, 39) are tiled in full tiles and a smaller
    # last one, which needs their loop last (3->39 3x3: 6x faster than tiles of 3 image rows).
    if reg_axis in broadcast and (channels_inner or _largest_divisor(extents[reg_axis], 8) < 4):
        order.remove(reg_axis)
        order.append(reg_axis)
    reg_tile, vec_tile = _tile_sizes(
        extents[reg_axis] if reg_axis is not None else 1, extents[vec_axis], lanes, tail=order[-1] == reg_axis,
        registers=knobs.registers)
    # One vector wide (56, 28, 14 ...): more vectors come from a further output axis (the rows of
    # the image), each its own load, so every broadcast weight feeds several FMAs. On AVX-512, whose
    # FMAs read the broadcast weight from memory, only those loads count: as many channel rows as
    # the registers hold first (128->128 3x3 on 28x28: 1.17x faster than 4 channels x 2 rows,
    # 3->28 3x3 stride 2: 3.5x; on AVX2 the same tile was 1.4x slower on 14x14).
    group_axis, group_tile = None, 1
    rest = [i for i in others if i != reg_axis]
    if vec_tile <= lanes and reg_axis in broadcast and rest:
        group_axis = rest[-1]
        reg_tile, group_tile = _tile_sizes(extents[reg_axis], extents[group_axis], 1, tail=order[-1] == reg_axis,
                                           registers=knobs.registers, free_broadcasts=free_broadcasts)
    _pack_weights(sch, block, vec_axis, vec_tile)
    outer, inner = {}, []
    for i in spatial:
        if i == vec_axis:
            outer[i], vec_inner = sch.split(loops[i], [None, vec_tile])
        elif i in (reg_axis, group_axis):
            outer[i], row_inner = sch.split(loops[i], [None, reg_tile if i == reg_axis else group_tile])
            inner.append(row_inner)
        else:
            outer[i] = loops[i]
    outer = [outer[i] for i in order]
    reduce_loops = [loops[i] for i in reduce]
    sch.reorder(*outer, *reduce_loops, *inner, vec_inner)
    if reg_axis is not None and extents[reg_axis] % reg_tile:
        # A smaller last row tile: its loop stays apart so LoopPartition can split it from the rest.
        sch.annotate(outer[-1], _PARTITION_HINT, 1)
        head = ([sch.fuse(*outer[:-1])] if len(outer) > 1 else []) + [outer[-1]]
    else:
        head = [sch.fuse(*outer)]
    out_elements = math.prod(extents[i] for i in spatial)
    # The update loops are annotated before decompose_reduction: once split from its init, the
    # update block is no longer a complete reduction block and parallel/vectorize reject it.
    if cores > 1 and out_elements >= _MIN_PARALLEL_ELEMENTS:
        sch.parallel(head[0])
    for loop in inner:
        sch.unroll(loop)
    sch.vectorize(vec_inner)
    writeback = sch.cache_write(block, 0, "local")
    _vector_dim_last(sch, block, vec_axis)
    sch.reverse_compute_at(writeback, head[-1])
    _fuse_epilogue(sch, writeback)
    init = sch.decompose_reduction(block, reduce_loops[0])
    for tile_block in (init, writeback):
        tile_loops = sch.get_loops(tile_block)[len(head):]
        for loop in tile_loops[:-1]:
            sch.unroll(loop)
        if tile_loops:
            sch.vectorize(tile_loops[-1])


# What a cheap epilogue's TVMScript may call: bias and ReLU/clip are +, max and min of constants.
_CHEAP_EPILOGUE_CALLS = {"max", "min", "float32", "int64", "int32", "Buffer"}


def _cheap_epilogue(script: str) -> bool:
    """Whether a block body (as TVMScript) calls nothing but max/min and constants."""
    return set(re.findall(r"\bT\.(\w+)\(", script)) <= _CHEAP_EPILOGUE_CALLS


def _fuse_epilogue(sch, writeback) -> None:
    """Compute the cheap elementwise block after the kernel (bias, ReLU, clip) in its write-back,
    while the tile is in registers: one pass over the output instead of a store, a load and a
    second store (a depthwise convolution is memory-bound: 1.6x faster on 96x112x112). Epilogues
    that call functions (swish's exp) stay a separate vector pass: in the unrolled write-back
    they made the kernel up to 1.6x slower."""
    consumers = sch.get_consumers(writeback)
    if len(consumers) == 1 and _spatial_only(sch, consumers[0]) and _cheap_epilogue(sch.get(consumers[0]).body.script()):
        try:
            sch.reverse_compute_inline(consumers[0])
        except (s_tir.ScheduleError, RuntimeError):  # not a plain elementwise read of the output
            pass


def _vector_dim_last(sch, block, axis: int) -> None:
    """Lay the block's accumulator out with ``axis`` innermost: a vector of accumulators is then
    one register instead of lanes strided through memory (when the vector runs over channels)."""
    var = sch.get(block).iter_vars[axis].var
    region = sch.get(block).writes[0].region
    dims = [j for j, r in enumerate(region) if r.min.same_as(var)]
    if len(dims) != 1 or dims[0] == len(region) - 1:
        return
    order = [j for j in range(len(region)) if j != dims[0]] + dims
    sch.transform_layout(block, ("write", 0), tirx.IndexMap.from_func(lambda *idx: [idx[j] for j in order], ndim=len(order)))


def _contiguous_tail(stmt, extents: list[int]) -> int:
    """How many innermost loops of a spatial block walk every buffer it touches contiguously:
    each access either ignores their variables or indexes its last dimensions by them alone, in
    order, over the whole dimension. Fused, they are one flat loop with linear indices."""
    region_list = [*stmt.reads, *stmt.writes]
    count = 0
    for axis in range(len(extents) - 1, -1, -1):
        tail = [iv.var for iv in stmt.iter_vars[axis:]]
        for region in region_list:
            used = [j for j, r in enumerate(region.region) if any(_uses(r.min, v) for v in tail)]
            if not used:
                continue
            dims = list(range(len(region.region) - len(tail), len(region.region)))
            if dims[0] < 0 or used != dims or any(
                    not region.region[d].min.same_as(v) or int(region.source.shape[d]) != extents[axis + k]
                    for k, (d, v) in enumerate(zip(dims, tail))):
                return count
        count += 1
    return count


def _schedule_injective(sch, block, loops, extents, lanes, cores) -> None:
    """Fuse the innermost loops that walk every buffer contiguously into one flat loop, vectorised
    in unrolled steps of four vectors where its length allows (LLVM vectorises it itself
    otherwise), and run the leading loops in parallel.

    Left to LLVM, the innermost loop alone (7, 14, 56 wide) ran an add at 0.16 to 0.7 ns per
    element depending on the trip counts; fused it runs at 0.14 to 0.3 on AVX-512, 3x faster on
    the small maps of late layers. The whole nest is fused only when its indices stay linear:
    a pad's or transpose's fused indices become div/mod chains LLVM cannot vectorise (5x slower).
    """
    tail = _contiguous_tail(sch.get(block), extents)
    total = math.prod(extents)
    parallel = cores > 1 and total >= _MIN_PARALLEL_ELEMENTS
    if tail < 2 and not parallel:
        raise s_tir.ScheduleError("nothing to do")
    head = len(loops) - max(tail, 1)
    flat = math.prod(extents[head:])
    nest = [*loops[:head], sch.fuse(*loops[head:]) if tail >= 2 else loops[-1]]
    sizes = [*extents[:head], flat]
    if tail and lanes > 1 and flat % (4 * lanes) == 0:
        rest, step, vector = sch.split(nest[-1], [None, 4, lanes])
        sch.unroll(step)
        sch.vectorize(vector)
        nest[-1], sizes[-1] = rest, flat // (4 * lanes)
    if not parallel:
        return
    leading, work = [], 1
    for loop, extent in zip(nest, sizes):
        leading.append(loop)
        work *= extent
        if work >= 4 * cores:
            break
    sch.parallel(sch.fuse(*leading) if len(leading) > 1 else leading[0])


def _concat_parts(stmt, extents: list[int]) -> tuple[int, list[int]] | None:
    """(axis, sizes) when the spatial block copies several buffers side by side along one axis
    (a concatenation, possibly with an elementwise block inlined): every read indexes each
    dimension by the output's, whole, except ``axis``, which it indexes from an offset, and the
    reads tile that axis exactly."""
    if len(stmt.reads) < 2 or len(stmt.writes) != 1:
        return None
    variables = [iv.var for iv in stmt.iter_vars]
    if len(stmt.writes[0].region) != len(variables) or any(
            not r.min.same_as(v) for r, v in zip(stmt.writes[0].region, variables)):
        return None
    axis, spans = None, []
    for read in stmt.reads:
        if len(read.region) != len(variables):
            return None
        shifted = [d for d, (r, v) in enumerate(zip(read.region, variables)) if not r.min.same_as(v)]
        sizes = [int(dim) for dim in read.source.shape]
        if len(shifted) > 1 or any(sizes[d] != extents[d] for d in range(len(sizes)) if d not in shifted + [axis]):
            return None
        d = shifted[0] if shifted else axis
        coefficients = sym.detect_linear_equation(read.region[d].min, [variables[d]]) if d is not None else None
        if d is None or axis not in (None, d) or not coefficients or not all(
                isinstance(c, tirx.IntImm) for c in coefficients) or int(coefficients[0]) != 1:
            return None
        axis = d
        spans.append((-int(coefficients[1]), sizes[d]))
    spans.sort()
    starts = [start for start, _ in spans]
    if starts != [sum(size for _, size in spans[:k]) for k in range(len(spans))] or sum(
            size for _, size in spans) != extents[axis]:
        return None
    return axis, [size for _, size in spans]


def _schedule_concat(sch, loops, axis: int, sizes: list[int], extents: list[int], lanes: int, cores: int) -> None:
    """Split the loop over the concatenated axis at the inputs' boundaries, so that each part is
    a plain copy of one input (the selects between inputs fold away), and walk each part's inner
    loops as one flat loop, vectorised in unrolled steps of four vectors where its length allows.
    As one loop with a select per input, a 17-input concatenation (DenseNet, 1024x7x7) took 77 us;
    split, 3.8 us."""
    inner = math.prod(extents[axis + 1:])
    for part, size in zip(sch.loop_partition(loops[axis], [*sizes[:-1], None]), sizes):
        block, = sch.get_child_blocks(part)
        part_loops = sch.get_loops(block)
        flat = sch.fuse(*part_loops[1:]) if len(part_loops) > 2 else part_loops[-1]
        if len(part_loops) > 1 and lanes > 1 and inner % (4 * lanes) == 0:
            _, step, vector = sch.split(flat, [None, 4, lanes])
            sch.unroll(step)
            sch.vectorize(vector)
        if cores > 1 and size * inner >= _MIN_PARALLEL_ELEMENTS:
            sch.parallel(part_loops[0])


def _spatial_only(sch, block) -> bool:
    return all(int(iv.iter_type) == _DATA_PAR for iv in sch.get(block).iter_vars)


def _plain_copy(sch, block) -> bool:
    """Whether the block only copies one buffer element to element (no bounds test, no arithmetic)."""
    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, tvm.ir.expr.TensorLoad)


def _inline_elementwise_chains(sch: s_tir.Schedule) -> bool:
    """Compute each intermediate spatial block (bias, batch norm, activation, exp's stages) inside
    the spatial blocks that read it, so a chain of them is one pass over memory instead of one
    pass each, and drop plain copies (the zero padding of a 1x1 convolution). Other blocks that
    feed a reduction (a convolution's padding) stay: inlined there they would put a bounds test
    in its innermost loop."""
    changed = False
    for block in sch.get_child_blocks(get_root_block(sch)):
        try:
            consumers = sch.get_consumers(block)
            if not consumers or not _spatial_only(sch, block):
                continue
            if not all(_spatial_only(sch, c) for c in consumers) and not _plain_copy(sch, block):
                continue
            sch.compute_inline(block)
            changed = True
        except (s_tir.ScheduleError, RuntimeError):
            continue
    return changed


def _row_stride(stmt, axis: int) -> int:
    """The step of the block's first read along its last dimension per step of ``axis`` (2 for a
    stride-2 convolution's input along the output width), 1 when it is not a constant step."""
    region = stmt.reads[0].region if stmt.reads else []
    var = stmt.iter_vars[axis].var
    if not region or not _uses(region[-1].min, var):
        return 1
    return _row_step(region, var) or 1


def _deinterleave_strided_rows(sch: s_tir.Schedule, lanes: int, knobs: Knobs) -> bool:
    """Store the padded copy a strided reduction reads along its vector axis as ``stride``
    interleaved planes, row[x] -> row[x % stride][x // stride], so that each of the reduction's
    vector loads is contiguous instead of a gather. The copy walks its rows in pairs of planes,
    which LLVM vectorises with interleaved loads. This is how a depthwise convolution (vectorised
    along the image row, its input indexed by channel) runs at stride 2: 96 channels 3x3 on
    112x112 went from 0.60 to 0.29 ms, 144 on 28x28 from 0.054 to 0.027 ms (AVX-512, one thread)."""
    changed = False
    for block in sch.get_child_blocks(get_root_block(sch)):
        plain = _plain_loops(sch, block)
        if plain is None or _COMM_REDUCE not in plain[2]:
            continue
        _, extents, kinds = plain
        spatial = [i for i, k in enumerate(kinds) if k == _DATA_PAR]
        reduce = [i for i, k in enumerate(kinds) if k == _COMM_REDUCE]
        if (not spatial or max(spatial) > min(reduce) or _row_reduction(sch, block, extents, kinds, lanes)
                or _wide_pool(sch, block, extents, kinds, lanes)):
            continue
        stmt = sch.get(block)
        reduction = math.prod(extents[i] for i in reduce)
        pointwise = sum(extents[i] > 1 for i in reduce) == 1
        inner = spatial[-1]
        stride = _row_stride(stmt, inner)
        if stride < 2 or _vector_axis(sch, block, spatial, extents, reduction, pointwise, lanes,
                                      knobs.vector_axis) != inner:
            continue
        producers = [p for p in sch.get_producers(block) if sch.get(p).writes[0].source.same_as(stmt.reads[0].source)]
        if len(producers) != 1 or not _spatial_only(sch, producers[0]) or _plain_loops(sch, producers[0]) is None:
            continue
        copy = sch.get(producers[0])
        written = copy.writes[0]
        if (int(written.source.shape[-1]) % stride or not written.region[-1].min.same_as(copy.iter_vars[-1].var)
                or len(written.region) != len(copy.iter_vars)):
            continue
        ndim = len(copy.iter_vars)
        try:
            sch.transform_layout(producers[0], ("write", 0), tirx.IndexMap.from_func(
                lambda *idx: [*idx[:-1], idx[-1] % stride, idx[-1] // stride], ndim=ndim))
            sch.transform_block_layout(producers[0], tirx.IndexMap.from_func(
                lambda *idx: [*idx[:-1], idx[-1] // stride, idx[-1] % stride], ndim=ndim))
            sch.unroll(sch.get_loops(producers[0])[-1])
        except (s_tir.ScheduleError, RuntimeError):
            continue
        changed = True
    return changed


def default_schedule(sch: s_tir.Schedule, target: Target, knobs: Knobs = Knobs()) -> s_tir.Schedule | None:
    """``sch`` with every block the rules fit scheduled, or None when no block matched a rule.

    Each block is scheduled on its own; a block whose schedule a primitive rejects is left as it
    was (every primitive checks before it changes anything), so the result is always valid. The
    returned schedule carries the trace, so MetaSchedule can take it as one candidate, and tuning
    measures it under each of knob_space's ``knobs`` (tune.py).
    """
    lanes = vector_lanes(target)
    if knobs.vector_bits is not None:
        lanes = min(lanes, max(1, knobs.vector_bits // 32))
    cores = num_cores(target)
    free_broadcasts = embedded_broadcast(target)
    changed = _inline_elementwise_chains(sch)
    changed = _deinterleave_strided_rows(sch, lanes, knobs) or changed
    for name in [sch.get(block).name_hint for block in sch.get_child_blocks(get_root_block(sch))]:
        try:
            block = sch.get_sblock(name)
        except (s_tir.ScheduleError, RuntimeError, ValueError):  # fused into an earlier block's write-back
            continue
        plain = _plain_loops(sch, block)
        if plain is None:
            continue
        loops, extents, kinds = plain
        trial = sch.copy()
        try:
            if _COMM_REDUCE in kinds and _row_reduction(trial, block, extents, kinds, lanes):
                _schedule_row_reduction(trial, block, loops, extents, kinds, lanes, cores)
            elif _COMM_REDUCE in kinds and _wide_pool(trial, block, extents, kinds, lanes):
                _schedule_wide_pool(trial, loops, extents, kinds, cores)
            elif _COMM_REDUCE in kinds:
                _schedule_reduction(trial, block, loops, extents, kinds, lanes, cores, knobs, free_broadcasts)
            elif (concat := _concat_parts(trial.get(block), extents)) is not None:
                _schedule_concat(trial, loops, *concat, extents, lanes, cores)
            else:
                _schedule_injective(trial, block, loops, extents, lanes, cores)
        except (s_tir.ScheduleError, RuntimeError, IndexError):  # the rule does not fit this block
            continue
        sch = trial
        changed = True
    return sch if changed else None


def distinct_knobs(mod: tvm.IRModule, target: Target) -> list[Knobs]:
    """The settings of knob_space that schedule ``mod``'s kernel differently from each other (the
    first setting of each distinct schedule, so the defaults come first)."""
    found, schedules = [], []
    for knobs in knob_space(target):
        sch = default_schedule(s_tir.Schedule(mod), target, knobs)
        scheduled = mod if sch is None else sch.mod
        if not any(tvm_ffi.structural_equal(scheduled, seen) for seen in schedules):
            found.append(knobs)
            schedules.append(scheduled)
    return found


def schedule_prim_func(func: tirx.PrimFunc, target: Target) -> tirx.PrimFunc | None:
    """A scheduled copy of ``func``, or None when no block matched a rule."""
    sch = default_schedule(s_tir.Schedule(func), target)
    if sch is None:
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _rewrite_prim_funcs(mod: tvm.IRModule, rewrite) -> tvm.IRModule:
    """``mod`` with each PrimFunc replaced by ``rewrite(func)`` where that is not None."""
    updates = {}
    for gvar, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            rewritten = rewrite(func)
            if rewritten is not None:
                updates[gvar] = rewritten
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod


def default_schedule_pass(target: Target) -> tvm.transform.Pass:
    """Module pass giving every unscheduled PrimFunc the default CPU schedule for ``target``."""
    target = Target(target) if not isinstance(target, Target) else target

    def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
        if func.attrs is not None and int(func.attrs.get("tirx.is_scheduled", 0)) == 1:
            return None
        return schedule_prim_func(func, target)

    @tvm.transform.module_pass(opt_level=0, name="MnovaDefaultCPUSchedule")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return _rewrite_prim_funcs(mod, schedule)

    return _pass


def narrow_partitioned_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with the kernels whose loops carry a partition hint indexed in int32.

    TVM 0.27's LoopPartition builds the bounds of a split int64 loop from an int32 zero and fails
    on the mixed types; NarrowDataType leaves these kernels int64 (their buffers' symbolic element
    offsets are unbounded), so they are narrowed here, before lowering. Every tensor of our models
    has far fewer than 2**31 elements.
    """
    narrow = tirx.transform.ForceNarrowIndexToInt32()
    return _rewrite_prim_funcs(
        mod, lambda func: narrow(tvm.IRModule({"main": func}))["main"] if _PARTITION_HINT in func.script() else None)


@tvm.transform.module_pass(opt_level=0, name="MnovaNarrowPartitionedKernels")
def narrow_partitioned_kernels_pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Module pass form of narrow_partitioned_kernels (after the schedules, before lowering)."""
    return narrow_partitioned_kernels(mod)
