"""`mnova schedule`: the Schedule JSON of DESIGN.md, the plot, and bad input."""

import json

from mnova_tvm.cli import main
from mnova_tvm.graph import Node, OpGraph, Tensor
from mnova_tvm.memory import activation_peak


def test_schedule_json_follows_design(tmp_path, capsys):
    out, plot = tmp_path / "s.json", tmp_path / "s.png"
    assert main(["schedule", "googlenet", "--input-size", "64", "--json", str(out), "--plot", str(plot),
                 "--random-orders", "10"]) == 0
    data = json.loads(out.read_text())
    assert list(data) == ["model", "nodes", "tensors", "graph_outputs", "order", "peak_bytes", "optimal",
                          "lower_bound_bytes", "search_seconds", "baselines"]
    names = [n["name"] for n in data["nodes"]]
    assert sorted(data["order"]) == sorted(names) and len(set(names)) == len(names)
    for node in data["nodes"]:
        assert set(node) == {"name", "op", "inputs", "outputs"}
        assert all(t in data["tensors"] for t in node["inputs"] + node["outputs"])
    assert {t["kind"] for t in data["tensors"].values()} <= {"input", "activation", "output", "weight"}
    assert all(data["tensors"][t["view_of"]] for t in data["tensors"].values() if "view_of" in t)
    # rebuild the graph from the JSON and check the peak independently
    tensors = {k: Tensor(k, (v["bytes"],), "uint8", v["bytes"], v["kind"], v.get("view_of")) for k, v in data["tensors"].items()}
    inputs = tuple(k for k, v in data["tensors"].items() if v["kind"] == "input")
    graph = OpGraph(tuple(Node(n["name"], n["op"], tuple(n["inputs"]), tuple(n["outputs"])) for n in data["nodes"]),
                    tensors, inputs, tuple(data["graph_outputs"]))
    assert activation_peak(graph, data["order"]) == data["peak_bytes"]
    assert data["lower_bound_bytes"] <= data["peak_bytes"] <= min(data["baselines"].values())
    assert data["optimal"] is True
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_schedule_bad_budget(tmp_path, capsys):
    assert main(["schedule", "squeezenet1_1", "--input-size", "64", "--time-budget", "0", "--json", str(tmp_path / "s.json")]) == 2
    assert "time budget must be positive" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
