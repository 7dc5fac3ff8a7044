"""OpGraph from Relax: nodes, tensors, kinds, views, multi-output nodes, FLOPs, memory."""

import json

import pytest

from mnova_tvm import frontend
from mnova_tvm.cli import main
from mnova_tvm.graph import Node, OpGraph, Tensor, from_relax
from mnova_tvm.memory import activation_peak, memory_profile, tvm_planned_bytes
from onnx_models import branchy_cnn


@pytest.fixture(scope="module")
def graph_and_mod():
    mod = frontend.load_model(branchy_cnn())
    return from_relax(mod, "branchy"), mod


def test_nodes_tensors_and_kinds(graph_and_mod):
    g, _ = graph_and_mod
    ops = [n.op for n in g.nodes]
    assert ops == ["relax.nn.conv2d", "relax.reshape", "relax.add", "relax.nn.relu", "relax.split", "relax.add",
                   "relax.concat", "relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims", "relax.matmul"]
    conv, bias, _, _, split, _, _, pool, flat, transpose, matmul = g.nodes
    assert conv.attrs["kernel"] == (3, 3) and conv.attrs["strides"] == (1, 1)
    assert conv.attrs["padding"] == (1, 1, 1, 1) and conv.attrs["groups"] == 1
    assert pool.attrs["kernel"] == (2, 2) and pool.attrs["strides"] == (2, 2)
    assert g.tensors[g.graph_inputs[0]].kind == "input" and g.tensors[g.graph_inputs[0]].nbytes == 3 * 64 * 4
    assert g.tensors[conv.inputs[1]].kind == "weight"
    assert [g.tensors[t].kind for t in g.graph_outputs] == ["output"]
    # views: the bias reshape is a view of a weight, the flatten a view of the pooled map
    assert g.tensors[bias.outputs[0]].view_of == bias.inputs[0] and g.tensors[bias.outputs[0]].nbytes == 0
    assert g.tensors[flat.outputs[0]].view_of == pool.outputs[0]
    # the split is one node with two outputs; its TupleGetItem bindings are folded into it
    assert len(split.outputs) == 2 and len(split.bindings) == 3
    assert g.tensors[transpose.outputs[0]].nbytes == 128 * 10 * 4


def test_flops_by_hand(graph_and_mod):
    g, _ = graph_and_mod
    conv, matmul, pool = g.nodes[0], g.nodes[-1], g.nodes[7]
    assert conv.flops == 2 * (8 * 8 * 8) * 3 * 3 * 3
    assert matmul.flops == 2 * 10 * 128
    assert pool.flops == 8 * 4 * 4 * 4


def test_memory_of_imported_graph_by_hand(graph_and_mod):
    g, mod = graph_and_mod
    kib = 1024
    # input 768 B; conv out 2 KiB; add 2 KiB; relu 2 KiB; split 2x1 KiB; add 1 KiB; concat 2 KiB;
    # pool 512 B; transpose 5 KiB; matmul 40 B (output stays).
    profile = memory_profile(g, g.import_order)
    assert profile[0] == 768 + 2 * kib  # conv reads the input, which is then freed
    assert profile[4] == 2 * kib + 2 * kib  # split: relu output + both halves
    assert max(profile) == activation_peak(g)
    planned = tvm_planned_bytes(mod)
    # TVM allocates every intermediate of this order (not the input, not the returned output)
    assert planned >= activation_peak(g) - 768 - 40


def test_malformed_graphs_are_rejected():
    t = Tensor("a", (1,), "float32", 4, "activation")
    with pytest.raises(ValueError, match="nothing produces"):
        OpGraph((Node("n", "op", ("a",), ()),), {"a": t}, (), ())
    x = Tensor("x", (1,), "float32", 4, "input")
    with pytest.raises(ValueError, match="not topological"):
        OpGraph((Node("m", "op", ("a",), ("b",)), Node("n", "op", ("x",), ("a",))),
                {"x": x, "a": t, "b": Tensor("b", (1,), "float32", 4, "output")}, ("x",), ("b",))


def test_inspect_json(capsys):
    assert main(["inspect", "squeezenet1_1", "--input-size", "64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "squeezenet1_1" and info["nodes"] > 50
    assert info["activation_peak_bytes"] > 0 and info["tvm_planned_bytes"] > 0 and info["flops"] > 0
