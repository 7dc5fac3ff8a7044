"""Plans and slicing rules, without compiling: quantisation, validation, halos, segments, memory, traffic."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnova_tvm import frontend
from mnova_tvm.errors import MnovaError
from mnova_tvm.graph import from_relax
from mnova_tvm.partition import (DOWNLOAD_EXTRA, LOADED_LIBRARY_BYTES, RETURNED_SETS, OpPartition, Plan, _window_input_rows,
                                 allowed_dims, channel_granule, device_memory, partition_op, quantise, region_bytes,
                                 segment_memory, segments, single_device_plan, split_size, traffic, uniform_plan)
from mnova_tvm.runtime import prepare
from onnx_models import edge_cnn


@pytest.fixture(scope="module")
def graph():
    return from_relax(prepare(frontend.load_model(edge_cnn())))


@given(st.integers(0, 300), st.lists(st.floats(0, 10), min_size=1, max_size=6))
def test_quantise_gives_whole_units_in_proportion(total, proportions):
    units = quantise(total, proportions)
    assert sum(units) == total and all(u >= 0 for u in units)
    p = np.asarray(proportions)
    share = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
    assert np.all(np.abs(np.asarray(units) - share * total) < 1 + 1e-9)


@given(st.integers(1, 40), st.sampled_from([1, 4, 8, 16]), st.lists(st.floats(0, 10), min_size=1, max_size=6))
def test_quantise_in_granules_gives_whole_granules_in_proportion(blocks, granule, proportions):
    units = quantise(blocks * granule, proportions, granule)
    assert sum(units) == blocks * granule and all(u >= 0 and u % granule == 0 for u in units)
    assert units == tuple(granule * u for u in quantise(blocks, proportions))


def test_channel_splits_move_blocks_a_vector_fills():
    assert [channel_granule(c) for c in (1000, 1280, 256, 96, 64, 32, 16, 250, 3)] == [8, 16, 16, 8, 8, 4, 1, 1, 1]
    graph = from_relax(prepare(frontend.load_model("squeezenet1_1")))
    convs = [n for n in graph.nodes if n.op == "relax.nn.conv2d"]
    classifier = max(convs, key=lambda n: split_size(graph, n.name, "channel"))
    assert split_size(graph, classifier.name, "channel") == 1000
    assert partition_op(graph, classifier.name, "channel", [1, 3]).shares == (248, 752)  # not (250, 750)
    assert partition_op(graph, classifier.name, "height", [1, 3]).shares == (3, 10)  # rows: any count


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 7), st.integers(1, 3), st.integers(1, 3), st.integers(0, 3), st.integers(1, 40), st.data())
def test_halo_rows_are_exactly_the_rows_the_window_reads(kernel, stride, dilation, pad, in_rows, data):
    class Node:  # the attributes _window_input_rows reads
        attrs = {"kernel": (kernel, kernel), "strides": (stride, stride), "dilation": (dilation, dilation),
                 "padding": (pad, 0, pad, 0)}

    out_rows = (in_rows + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out_rows < 1 or pad > dilation * (kernel - 1):  # such windows are not split by height
        return
    lo = data.draw(st.integers(0, out_rows - 1))
    hi = data.draw(st.integers(lo + 1, out_rows))
    a, b, pad_top, pad_bottom = _window_input_rows(Node, lo, hi, in_rows)
    read = {r * stride - pad + k * dilation for r in range(lo, hi) for k in range(kernel)}
    inside = sorted(i for i in read if 0 <= i < in_rows) or [a]  # a dilated tap may skip a tiny image
    assert a <= inside[0] and b >= inside[-1] + 1  # every real row read
    if dilation == 1 and read & set(range(in_rows)):
        assert (a, b) == (inside[0], inside[-1] + 1)  # and no more (a dilated one may span skipped rows)
    # the sliced window, padded as returned, yields exactly hi - lo output rows
    assert (b - a + pad_top + pad_bottom - dilation * (kernel - 1) - 1) // stride + 1 == hi - lo
    assert pad_top == max(0, pad - lo * stride) and pad_top <= pad and pad_bottom <= pad


def test_allowed_dims_follow_the_operator(graph):
    by_op = {}
    for node in graph.nodes:
        by_op.setdefault(node.op, set()).update(allowed_dims(graph, node))
    assert by_op["relax.nn.conv2d"] == {"none", "height", "channel"}
    assert by_op["relax.concat"] == {"none", "height"}  # channel concat cannot be split by channel
    assert by_op["relax.nn.softmax"] == {"none"}
    assert by_op["relax.matmul"] == {"none", "channel"}


def test_single_device_plan_is_one_segment_on_one_device(graph):
    plan = single_device_plan(graph, ["a", "b"], 1)
    segs = segments(graph, plan)
    assert len(segs) == 1 and segs[0].shares == (0, 1)
    assert traffic(graph, plan)[0].direction == "send"
    assert sum(t.nbytes for t in traffic(graph, plan)) == graph.tensors["input"].nbytes + 10 * 4
    memory = device_memory(graph, plan)
    assert memory[0] == 0 and memory[1] >= graph.weight_bytes


def test_height_plan_segments_halos_and_traffic(graph):
    plan = uniform_plan(graph, ["a", "b", "c"], "height", [1, 1, 1])
    segs = segments(graph, plan)
    for seg in segs:
        if seg.dim != "height":
            continue
        first = graph.node_by_name[seg.nodes[0]]
        # only the first operator of a height segment may read a window
        assert all(graph.node_by_name[n].op not in ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d")
                   or graph.node_by_name[n].attrs["kernel"][0] == 1 for n in seg.nodes[1:])
        rows = [seg.output_regions[d][seg.outputs[0]][1:] for d in range(3)]
        assert rows[0][0] == 0 and rows[-1][1] == graph.tensors[seg.outputs[0]].shape[2]
        if first.op == "relax.nn.conv2d" and first.attrs["kernel"][0] == 3:  # halos overlap
            ins = [seg.input_regions[d][first.inputs[0]] for d in range(3)]
            assert ins[0][2] > ins[1][1] and ins[1][2] > ins[2][1]
    moves = traffic(graph, plan, segs)
    for move in moves:
        seg = segs[move.segment]
        regions = seg.input_regions if move.direction == "send" else seg.output_regions
        assert move.nbytes == region_bytes(graph, move.tensor, regions[move.device][move.tensor])
    # splitting by height moves more data than running on one device, never less
    assert sum(m.nbytes for m in moves) > sum(m.nbytes for m in traffic(graph, single_device_plan(graph, ["a", "b", "c"], 0)))


def test_channel_split_divides_weights(graph):
    def weights(plan):
        return [sum(segment_memory(graph, seg, d).weights for seg in segments(graph, plan)) for d in range(2)]

    single = weights(single_device_plan(graph, ["a", "b"], 0))
    split = weights(uniform_plan(graph, ["a", "b"], "channel", [1, 1]))
    assert single == [graph.weight_bytes, 0]
    assert max(split) < 0.75 * single[0] and sum(split) >= single[0]


def test_device_memory_counts_what_the_runtime_holds(graph):
    """One device's footprint: code and runtime, weights, the arena, its output, kernel workspace,
    the input of a call and the RPC buffers of its largest transfer; a pipeline splits it."""
    single = single_device_plan(graph, ["a", "b"], 0)
    (seg,) = segments(graph, single)
    need = segment_memory(graph, seg, 0)
    assert need.weights == graph.weight_bytes and need.inputs == graph.tensors["input"].nbytes
    assert need.workspace > 0 and need.arena > 0 and need.returned == 1
    running = (need.weights + need.arena + RETURNED_SETS * need.largest_returned + need.workspace + need.inputs
               + DOWNLOAD_EXTRA * need.transfer)
    assert device_memory(graph, single)[0] == int(LOADED_LIBRARY_BYTES + need.code + running)
    order = graph.import_order
    half = Plan(("a", "b"), order, {n: partition_op(graph, n, "none", [1, 0] if i < len(order) // 2 else [0, 1])
                                    for i, n in enumerate(order)})
    parts = device_memory(graph, half)
    assert all(0 < m < device_memory(graph, single)[0] for m in parts)


def test_plan_json_round_trip_and_bad_plans(graph, tmp_path):
    plan = uniform_plan(graph, ["a", "b"], "height", [2, 1])
    path = tmp_path / "plan.json"
    plan.save(path, graph)
    assert Plan.load(path, graph) == plan
    data = json.loads(path.read_text())
    data["operators"][0]["shares"] = [1, 1]
    with pytest.raises(MnovaError, match="shares sum to 2"):
        Plan.from_json(data, graph)
    data = json.loads(path.read_text())
    softmax = next(o for o in data["operators"] if o["op"] == "nn.softmax")
    softmax["dim"] = "channel"
    with pytest.raises(MnovaError, match="cannot be split by channel"):
        Plan.from_json(data, graph)
    data = json.loads(path.read_text())
    data["operators"] = data["operators"][::-1]
    with pytest.raises(MnovaError, match="order is invalid"):
        Plan.from_json(data, graph)
    with pytest.raises(MnovaError, match="malformed"):
        Plan.from_json({"devices": ["a"]}, graph)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MnovaError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json", graph)


def test_partition_op_none_goes_to_the_largest_proportion(graph):
    assert partition_op(graph, "lv", "none", [0.1, 0.7, 0.2]) == OpPartition("none", (0, 1, 0))
    part = partition_op(graph, "lv", "channel", [1, 3])
    assert part.shares == (2, 6)


def _actual_arenas(mod, graph, plan, segs) -> list[int]:
    """Per device, the largest arena TVM's lowering of its library allocates (fusion included)."""
    import tvm
    from tvm import relax

    from mnova_tvm.memory import lower_until_memory_plan, storage_allocations
    from mnova_tvm.runtime import build_device_modules
    from mnova_tvm.transform import ArenaPlanMemory, fusion_passes

    arenas = []
    for module in build_device_modules(mod, graph, plan, segs):
        sizes = [0]
        if module is not None:
            with tvm.target.Target("llvm"):
                fused = tvm.transform.Sequential(fusion_passes())(module)
            for func in lower_until_memory_plan(fused, "llvm", ArenaPlanMemory).functions.values():
                if isinstance(func, relax.Function):
                    sizes += storage_allocations(func)
        arenas.append(max(sizes))
    return arenas


@pytest.mark.parametrize("model", ["squeezenet1_1", *(pytest.param(name, marks=pytest.mark.heavy) for name in
                                                      ("mobilenet_v2", "densenet121", "inception_v3"))])
def test_planned_arena_bounds_what_the_fused_library_allocates(model):
    """The arena the plan counts per device (the tensors fusion still stores, placed as the arena
    planner places them) is at least what the compiled library allocates, and within 5 % of it
    for one device running it all."""
    from mnova_tvm import planners, zoo
    from mnova_tvm.targets import load_cluster

    mod = prepare(frontend.load_model(model, input_size=zoo.MODELS[model].test_input_size))
    graph = from_relax(mod)
    cluster = load_cluster("local4")
    plans = {"single": single_device_plan(graph, ["a", "b", "c", "d"], 0),
             "height": planners.proportional(graph, cluster, "height"),
             "channel": planners.proportional(graph, cluster, "channel")}
    for label, plan in plans.items():
        segs = segments(graph, plan)
        planned = [max(segment_memory(graph, seg, d).arena for seg in segs) for d in range(4)]
        actual = _actual_arenas(mod, graph, plan, segs)
        assert all(p >= a for p, a in zip(planned, actual)), (label, planned, actual)
        if label == "single":
            assert planned[0] <= 1.05 * actual[0]
