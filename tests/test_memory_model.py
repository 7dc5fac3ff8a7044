"""The memory model on small hand-computed graphs (DESIGN.md "Memory semantics")."""

import pytest

from mnova_tvm.errors import MnovaError
from mnova_tvm.graph import Node, OpGraph, Tensor
from mnova_tvm.memory import activation_peak, memory_profile


def t(name, nbytes, kind="activation", view_of=None):
    return Tensor(name, (nbytes,), "uint8", nbytes, kind, view_of)


def diamond():
    # x(10) -> a(20) -> b(30) ; a -> c(40) ; b,c -> d(5, output)
    tensors = [t("x", 10, "input"), t("w", 1000, "weight"), t("a", 20), t("b", 30), t("c", 40), t("d", 5, "output")]
    nodes = [
        Node("A", "op", ("x", "w"), ("a",)),
        Node("B", "op", ("a",), ("b",)),
        Node("C", "op", ("a",), ("c",)),
        Node("D", "op", ("b", "c"), ("d",)),
    ]
    return OpGraph(tuple(nodes), {x.name: x for x in tensors}, ("x",), ("d",))


def test_diamond_profile_by_hand():
    g = diamond()
    # A: x+a = 30, x freed. B: a+b = 50. C: a+b+c = 90, a freed. D: b+c+d = 75.
    assert memory_profile(g, ["A", "B", "C", "D"]) == [30, 50, 90, 75]
    assert memory_profile(g, ["A", "C", "B", "D"]) == [30, 60, 90, 75]
    assert activation_peak(g) == 90


def test_view_keeps_base_alive_and_costs_nothing():
    # x(8) -> a(100) ; v = view(a) ; B reads v -> b(10) ; C reads x?? no: C reads b -> out(1)
    tensors = [t("x", 8, "input"), t("a", 100), t("v", 0, view_of="a"), t("b", 10), t("o", 1, "output")]
    nodes = [
        Node("A", "op", ("x",), ("a",)),
        Node("V", "reshape", ("a",), ("v",)),
        Node("B", "op", ("v",), ("b",)),
        Node("C", "op", ("b",), ("o",)),
    ]
    g = OpGraph(tuple(nodes), {x.name: x for x in tensors}, ("x",), ("o",))
    # A: 108, x freed -> 100. V: 100 (view free) ; a must stay until B ran. B: 110, a freed. C: 11.
    assert memory_profile(g, ["A", "V", "B", "C"]) == [108, 100, 110, 11]


def test_multi_output_node_and_graph_outputs_stay():
    tensors = [t("x", 4, "input"), t("p", 6), t("q", 7, "output"), t("r", 2), t("o", 3, "output")]
    nodes = [
        Node("S", "split", ("x",), ("p", "q")),
        Node("R", "op", ("p",), ("r",)),
        Node("O", "op", ("r",), ("o",)),
    ]
    g = OpGraph(tuple(nodes), {x.name: x for x in tensors}, ("x",), ("q", "o"))
    # S: 4+6+7 = 17, x freed -> 13. R: 13+2 = 15, p freed -> 9. O: 9+3 = 12.
    assert memory_profile(g, ["S", "R", "O"]) == [17, 15, 12]


def test_rejects_bad_orders():
    g = diamond()
    with pytest.raises(MnovaError, match="producer"):
        memory_profile(g, ["B", "A", "C", "D"])
    with pytest.raises(MnovaError, match="permutation"):
        memory_profile(g, ["A", "B", "C"])
