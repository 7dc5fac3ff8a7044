"""BTSearch against brute force on thousands of random DAGs, and on hand-made cases."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnova_tvm.btsearch import btsearch, lower_bound
from mnova_tvm.errors import MnovaError
from mnova_tvm.graph import Node, OpGraph, Tensor
from mnova_tvm.memory import activation_peak
from mnova_tvm.orders import brute_force_order, greedy_memory_order, random_order_peaks, random_topological_orders


@st.composite
def random_dags(draw, max_nodes=8):
    """Random operator graphs: multi-input/multi-output nodes, views, weights-only nodes,
    graph outputs in the middle, inputs read late."""
    n = draw(st.integers(1, max_nodes))
    tensors = {}
    n_inputs = draw(st.integers(1, 2))
    available = []
    for k in range(n_inputs):
        name = f"in{k}"
        tensors[name] = Tensor(name, (1,), "uint8", draw(st.integers(1, 50)), "input")
        available.append(name)
    tensors["w"] = Tensor("w", (1,), "uint8", 999, "weight")
    nodes, outputs = [], []
    for i in range(n):
        kind = draw(st.sampled_from(["op", "op", "op", "view", "weights_only", "multi"]))
        if kind == "weights_only" or not available:
            inputs = ("w",)
        else:
            k = 1 if kind == "view" else draw(st.integers(1, min(3, len(available))))
            inputs = tuple(draw(st.lists(st.sampled_from(available), min_size=k, max_size=k, unique=True)))
        if kind == "view":
            out = f"t{i}"
            tensors[out] = Tensor(out, (1,), "uint8", 0, "activation", view_of=inputs[0])
            outs = (out,)
        else:
            count = 2 if kind == "multi" else 1
            outs = tuple(f"t{i}_{j}" for j in range(count))
            for o in outs:
                tensors[o] = Tensor(o, (1,), "uint8", draw(st.integers(1, 100)), "activation")
        nodes.append(Node(f"n{i}", "op", inputs, outs))
        available.extend(outs)
    # graph outputs: the last node's outputs plus maybe some from the middle
    outputs = list(nodes[-1].outputs)
    for node in nodes[:-1]:
        if draw(st.integers(0, 5)) == 0:
            outputs.append(node.outputs[0])
    for t in outputs:
        old = tensors[t]
        tensors[t] = Tensor(old.name, old.shape, old.dtype, old.nbytes, "output", old.view_of)
    inputs = tuple(f"in{k}" for k in range(n_inputs))
    return OpGraph(tuple(nodes), tensors, inputs, tuple(dict.fromkeys(outputs)))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags())
def test_equals_brute_force_on_random_dags(graph):
    result = btsearch(graph)
    _, best = brute_force_order(graph)
    assert result.peak_bytes == best
    assert graph.topological_violation(result.order) is None
    assert activation_peak(graph, result.order) == result.peak_bytes
    assert result.optimal
    assert result.lower_bound_bytes <= result.peak_bytes


def chain_with_branches():
    """Import order runs a big branch first and keeps it alive; the optimum runs it last.

    x -> A(a: 10) -> B(b: 100) ...........-> D(out: 1) reads b and c
           a -> C1(c1: 50) -> C2(c: 5) ----^
    """
    t = lambda name, size, kind="activation": Tensor(name, (1,), "uint8", size, kind)
    tensors = {x.name: x for x in [t("x", 1, "input"), t("a", 10), t("b", 100), t("c1", 50), t("c", 5), t("o", 1, "output")]}
    nodes = (
        Node("A", "op", ("x",), ("a",)),
        Node("B", "op", ("a",), ("b",)),
        Node("C1", "op", ("a",), ("c1",)),
        Node("C2", "op", ("c1",), ("c",)),
        Node("D", "op", ("b", "c"), ("o",)),
    )
    return OpGraph(nodes, tensors, ("x",), ("o",))


def test_beats_import_order_by_hand():
    g = chain_with_branches()
    assert activation_peak(g) == 10 + 100 + 50  # B then C1: a, b, c1 all live
    result = btsearch(g)
    assert result.order == ("A", "C1", "C2", "B", "D")
    # A: 11, C1: a+c1 = 60, C2: a+c1+c = 65, B: a+c+b = 115, D: b+c+o = 106
    assert result.peak_bytes == 115 and result.optimal
    assert result.peak_bytes == brute_force_order(g)[1]


def big_random_graph(width=14, depth=6):
    """Wide parallel branches: many states, for the time budget."""
    t = lambda name, size, kind="activation": Tensor(name, (1,), "uint8", size, kind)
    tensors = {"x": t("x", 1, "input")}
    nodes, tails = [], []
    for b in range(width):
        prev = "x"
        for d in range(depth):
            name = f"b{b}_{d}"
            tensors[name] = t(name, 7 + (b * 31 + d * 17) % 90)
            nodes.append(Node(name, "op", (prev,), (name,)))
            prev = name
        tails.append(prev)
    tensors["o"] = t("o", 1, "output")
    nodes.append(Node("join", "op", tuple(tails), ("o",)))
    return OpGraph(tuple(nodes), tensors, ("x",), ("o",))


def test_time_budget_is_anytime():
    g = big_random_graph()
    start = time.perf_counter()
    result = btsearch(g, time_budget=0.2)
    assert time.perf_counter() - start < 5
    assert g.topological_violation(result.order) is None
    assert activation_peak(g, result.order) == result.peak_bytes
    assert result.gap_bytes >= 0 and result.lower_bound_bytes == lower_bound(g)
    assert result.peak_bytes <= activation_peak(g, greedy_memory_order(g))


def test_bad_inputs():
    with pytest.raises(MnovaError, match="positive"):
        btsearch(chain_with_branches(), time_budget=0)
    with pytest.raises(MnovaError, match="at most"):
        brute_force_order(big_random_graph())


def test_baselines_are_valid_orders():
    g = big_random_graph(4, 3)
    for order in random_topological_orders(g, 5, seed=1) + [greedy_memory_order(g)]:
        assert g.topological_violation(order) is None
    mean, best = random_order_peaks(g, 20, seed=0)
    assert best <= mean
    assert random_topological_orders(g, 3, seed=4) == random_topological_orders(g, 3, seed=4)
