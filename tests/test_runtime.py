"""The distributed executor gives the single-device answer under hand-made plans (local runners),
and over TVM RPC on a local cluster, with the command line and a device that dies."""

import json
import os
import random

import numpy as np
import pytest

from mnova_tvm import cluster as testbed
from mnova_tvm import frontend, zoo
from mnova_tvm.cli import main
from mnova_tvm.deploy import run_plan
from mnova_tvm.errors import MnovaError
from mnova_tvm.graph import from_relax
from mnova_tvm.partition import Plan, allowed_dims, partition_op, segments, single_device_plan, uniform_plan
from mnova_tvm.runtime import load_weights, prepare, run_locally
from mnova_tvm.targets import load_cluster
from onnx_models import branchy_cnn, edge_cnn


def mixed_plan(graph, devices, seed):
    """Every operator gets a random allowed dimension and random (sometimes zero) proportions."""
    rng = random.Random(seed)
    ops = {}
    for name in graph.import_order:
        dim = rng.choice(allowed_dims(graph, graph.node_by_name[name]))
        shares = [rng.choice([0, 0.2, 1, 3]) for _ in devices]
        ops[name] = partition_op(graph, name, dim, shares if sum(shares) else [1] * len(devices))
    return Plan(tuple(devices), tuple(graph.import_order), ops)


PLANS = {
    "height-2": lambda g: uniform_plan(g, ["a", "b"], "height", [1, 1]),
    "channel-4-uneven": lambda g: uniform_plan(g, ["a", "b", "c", "d"], "channel", [5, 1, 2, 1]),
    "height-4-uneven": lambda g: uniform_plan(g, ["a", "b", "c", "d"], "height", [3, 0, 1, 1]),
    "single-device": lambda g: single_device_plan(g, ["a", "b", "c"], 2),
    "mixed-3": lambda g: mixed_plan(g, ["a", "b", "c"], 0),
    "mixed-4": lambda g: mixed_plan(g, ["a", "b", "c", "d"], 1),
}


def check(mod, plan_name, tmp_path):
    mod = prepare(mod)
    graph = from_relax(mod)
    plan = PLANS[plan_name](graph)
    x = frontend.random_inputs(mod)
    result = run_locally(mod, plan, x, tmp_path)
    reference = frontend.run(mod, x)
    for out, ref in zip(result.outputs, reference):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    return graph, plan


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_edge_cnn_every_plan(plan_name, tmp_path):
    graph, plan = check(frontend.load_model(edge_cnn()), plan_name, tmp_path)
    if plan_name != "single-device":
        assert len(segments(graph, plan)) > 1


@pytest.mark.parametrize("plan_name", ["height-4-uneven", "mixed-3"])
def test_squeezenet(plan_name, tmp_path):
    check(frontend.load_model("squeezenet1_1", input_size=zoo.MODELS["squeezenet1_1"].test_input_size), plan_name, tmp_path)


def test_libraries_carry_code_and_the_weights_ship_beside(tmp_path):
    """A device's weights are lifted out of its library into a file beside it, uploaded once
    tensor by tensor (held once on the device, no upload of the whole model in one message)."""
    size = zoo.MODELS["squeezenet1_1"].test_input_size
    check(frontend.load_model("squeezenet1_1", input_size=size), "single-device", tmp_path)
    (library,) = [lib for lib in tmp_path.glob("*.so")]
    lifted = sum(a.nbytes for arrays in load_weights(library).values() for a in arrays)
    assert lifted >= 0.95 * 4 * zoo.count_params(zoo.build("squeezenet1_1", input_size=size))
    assert library.stat().st_size < lifted / 4


@pytest.mark.heavy
@pytest.mark.parametrize("plan_name", list(PLANS))
@pytest.mark.parametrize("model", sorted(zoo.MODELS))
def test_every_zoo_model_every_plan(model, plan_name, tmp_path):
    check(frontend.load_model(model, input_size=zoo.MODELS[model].test_input_size), plan_name, tmp_path)


def plain_cluster(tmp_path, name, devices=("a", "b", "c")):
    data = {"name": name, "tracker": {"host": "127.0.0.1", "port": 0}, "emulate": False, "devices": [
        {"name": d, "board": "host", "key": f"{name}-{d}", "memory_budget_bytes": 64 * 2**20,
         "link": {"bandwidth_mbps": 100, "latency_ms": 1}} for d in devices]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return load_cluster(str(path))


def test_over_rpc_matches_one_device_and_names_a_dead_device(tmp_path):
    cluster = plain_cluster(tmp_path, f"rt{os.getpid() % 10000}")
    mod = prepare(frontend.load_model(branchy_cnn()))
    graph = from_relax(mod)
    plan = mixed_plan(graph, ["a", "b", "c"], 3)
    x = frontend.random_inputs(mod)
    with testbed.LocalCluster(cluster, state_dir=tmp_path / "state", log=lambda *_: None) as state:
        report = run_plan(mod, graph, plan, cluster, state, x, tmp_path / "work", "branchy", repeat=2, log=lambda *_: None)
        assert report.matches and report.max_abs_diff <= 1e-4
        np.testing.assert_allclose(report.outputs[0], frontend.run(mod, x)[0], rtol=1e-5, atol=1e-6)
        assert len(report.latencies_ms) == 2 and report.median_ms > 0
        active = [d for d in range(3) if any(s.active(d) for s in segments(graph, plan))]
        assert all(report.devices[d].sent_bytes > 0 for d in active)
        testbed._kill_group(state.device("b").pid)
        with pytest.raises(MnovaError, match="device b"):
            run_plan(mod, graph, uniform_plan(graph, ["a", "b", "c"], "height", [1, 1, 1]), cluster, state, x,
                     tmp_path / "work2", "branchy", repeat=1, log=lambda *_: None)
    assert not any(testbed._alive(p) for p in [state.tracker_pid, *(d.pid for d in state.devices)])


def test_measured_device_memory_stays_within_the_planned_footprint(tmp_path):
    """What each emulated device really holds (its cgroup's peak over the idle server) is within
    what the plan counts for it (partition.device_memory): code, weights, one arena, the output
    blocks, kernel workspace and the RPC buffers, for plans of one segment and of many."""
    if not testbed.emulation_support()[0]:
        pytest.skip(f"emulation not available: {testbed.emulation_support()[1]}")
    name = f"mem{os.getpid() % 10000}"
    data = {"name": name, "tracker": {"host": "127.0.0.1", "port": 0}, "emulate": True, "devices": [
        {"name": d, "board": "host", "key": f"{name}-{d}", "memory_budget_bytes": 64 * 2**20,
         "link": {"bandwidth_mbps": 1000, "latency_ms": 0}} for d in ("a", "b")]}
    (tmp_path / f"{name}.json").write_text(json.dumps(data))
    cluster = load_cluster(str(tmp_path / f"{name}.json"))
    mod = prepare(frontend.load_model("squeezenet1_1", input_size=128))
    graph = from_relax(mod)
    x = frontend.random_inputs(mod)
    plans = {"single": single_device_plan(graph, ["a", "b"], 0), "height": uniform_plan(graph, ["a", "b"], "height", [2, 1]),
             "mixed": mixed_plan(graph, ["a", "b"], 5)}
    with testbed.LocalCluster(cluster, state_dir=tmp_path / "state", log=lambda *_: None) as state:
        for label, plan in plans.items():
            report = run_plan(mod, graph, plan, cluster, state, x, tmp_path / label, "squeezenet", repeat=3, log=lambda *_: None)
            assert report.matches, label
            for device in report.devices:
                if device.planned_bytes:
                    used = device.peak_bytes - device.idle_bytes
                    assert 0 < used <= device.planned_bytes, (label, device.name, used, device.planned_bytes)


def test_plan_and_run_commands(tmp_path, capsys):
    cluster = plain_cluster(tmp_path, f"rc{os.getpid() % 10000}", ("a", "b"))
    model = tmp_path / "edge.onnx"
    model.write_bytes(edge_cnn().SerializeToString())
    plan_path, x_path, y_path = tmp_path / "plan.json", tmp_path / "x.npy", tmp_path / "y.npy"
    assert main(["plan", str(model), "--cluster", cluster.path, "--strategy", "channel", "--proportions", "2,1",
                 "-o", str(plan_path)]) == 0
    assert "segments" in capsys.readouterr().out
    x = np.random.default_rng(5).standard_normal((1, 3, 19, 19)).astype("float32")
    np.save(x_path, x)
    code = main(["run", str(model), "--cluster", cluster.path, "--plan", str(plan_path), "--input", str(x_path),
                 "--output", str(y_path), "--repeat", "2", "--state", str(tmp_path / "state"),
                 "--report", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "matches single-device TVM" in out
    np.testing.assert_allclose(np.load(y_path), frontend.run(prepare(frontend.load_model(str(model))), [x])[0],
                               rtol=1e-5, atol=1e-6)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["output_check"]["matches"] and len(report["devices"]) == 2 and report["timeline"]
    assert (tmp_path / "r.png").stat().st_size > 10000
    assert not (tmp_path / "state" / f"{cluster.name}.json").exists()  # the command stopped what it started
    # bad input: wrong input shape, plan from another model
    np.save(x_path, x[:, :, :5])
    assert main(["run", str(model), "--cluster", cluster.path, "--plan", str(plan_path), "--input", str(x_path)]) == 2
    assert "needs (1, 3, 19, 19)" in capsys.readouterr().err
    other = tmp_path / "other.onnx"
    other.write_bytes(branchy_cnn().SerializeToString())
    assert main(["run", str(other), "--cluster", cluster.path, "--plan", str(plan_path)]) == 2
    assert "plan" in capsys.readouterr().err


def test_output_check_allows_float32_rounding_of_the_output_scale_only():
    """A build that folds batch norm rounds apart from TVM's default by ~5e-7 of the largest
    output, on elements near zero too; a real error (1e-3 of it) still fails."""
    from mnova_tvm.deploy import compare

    reference = np.array([[8.0, -3.0, 1e-4, 0.0]], dtype=np.float32)
    rounding = reference + np.float32(4e-6) * np.array([[1, -1, 1, 1]], dtype=np.float32)
    assert compare([rounding], [reference]) == (True, pytest.approx(4e-6, rel=0.25))  # float32 ulp at 8
    wrong = reference.copy()
    wrong[0, 2] += 8e-3
    assert not compare([wrong], [reference])[0]
    assert not compare([reference[:, :2]], [reference])[0]
