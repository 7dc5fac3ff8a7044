"""The model zoo: 11 architectures, published parameter counts, determinism, CLI."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mnova_tvm import zoo
from mnova_tvm.cli import main
from mnova_tvm.errors import MnovaError

NAMES = ["alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "googlenet",
         "inception_v3", "densenet121", "efficientnet_b0", "randwire_ws"]


def test_eleven_models():
    assert list(zoo.MODELS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_published(name):
    info = zoo.MODELS[name]
    count = zoo.count_params(zoo.build(name))
    assert abs(count - info.published_params) <= 0.02 * info.published_params, (count, info.published_params)


@pytest.mark.parametrize("name", NAMES)
def test_small_model_is_valid_and_finite(name):
    info = zoo.MODELS[name]
    model = zoo.build(name, info.test_input_size)
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((1, 3, info.test_input_size, info.test_input_size)).astype(np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert y.shape == (1, 1000)
    assert np.isfinite(y).all() and 0.01 < np.abs(y).max() < 100


def test_seeded_weights():
    a, b, c = zoo.build("resnet18", 32, seed=0), zoo.build("resnet18", 32, seed=0), zoo.build("resnet18", 32, seed=1)
    assert a.SerializeToString() == b.SerializeToString()
    wa = onnx.numpy_helper.to_array(a.graph.initializer[0])
    wc = onnx.numpy_helper.to_array(c.graph.initializer[0])
    assert wa.shape == wc.shape and not np.array_equal(wa, wc)


def test_bad_names_and_sizes():
    with pytest.raises(MnovaError, match="unknown zoo model"):
        zoo.build("resnet19")
    with pytest.raises(MnovaError, match="at least"):
        zoo.build("inception_v3", 32)


def test_cli_list_and_export(tmp_path, capsys):
    assert main(["zoo", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in NAMES)
    out = tmp_path / "m.onnx"
    assert main(["zoo", "export", "squeezenet1_1", "-o", str(out), "--input-size", "64"]) == 0
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert main(["zoo", "export", "nope", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
    assert "unknown zoo model" in capsys.readouterr().err


def test_shape_sweep_adds_shapes_the_zoo_lacks():
    """The profiling sweep: a valid ONNX model, the same for one seed, with depthwise and regular
    convolutions at all five resolutions, most of them of shapes no zoo model has."""
    from mnova_tvm.frontend import load_model
    from mnova_tvm.graph import from_relax
    from mnova_tvm.runtime import prepare

    sweep = zoo.shape_sweep(10, seed=0)
    onnx.checker.check_model(sweep)
    assert sweep.SerializeToString() == zoo.shape_sweep(10, seed=0).SerializeToString()
    assert sweep.SerializeToString() != zoo.shape_sweep(10, seed=1).SerializeToString()

    def convs(model):
        graph = from_relax(prepare(load_model(model)))
        return {(graph.tensors[n.inputs[0]].shape, graph.tensors[n.outputs[0]].shape, n.attrs["kernel"], n.attrs["strides"],
                 n.attrs.get("groups", 1)) for n in graph.nodes if n.op == "relax.nn.conv2d"}

    swept = convs(zoo.shape_sweep(20, seed=0))
    assert len({out[2] for _, out, *_ in swept} - {1}) >= 4  # maps of several resolutions (and 1x1 squeezes)
    assert any(groups > 1 for *_, groups in swept) and any(groups == 1 for *_, groups in swept)
    zoo_convs = convs(zoo.build("mobilenet_v2")) | convs(zoo.build("resnet18"))
    assert len(swept - zoo_convs) > 0.8 * len(swept)
    with pytest.raises(MnovaError, match="at least 5 blocks"):
        zoo.shape_sweep(3)


def test_branch_sweep_has_the_operators_a_cnn_has_few_of():
    """The branch sweep: a valid ONNX model, the same for one seed, whose branches hold strided
    depthwise and regular convs, max and average pools of several kernels and strides, concats of
    three or more inputs, and one global pool and classifier each; sweeps are found by name."""
    from mnova_tvm.frontend import load_model
    from mnova_tvm.graph import from_relax

    sweep = zoo.branch_sweep(10, seed=2)
    onnx.checker.check_model(sweep)
    assert sweep.SerializeToString() == zoo.sweep_named("branches10-seed2").SerializeToString()
    assert zoo.sweep_named("sweep20").SerializeToString() == zoo.shape_sweep(20).SerializeToString()
    assert zoo.sweep_named("resnet18") is None
    assert [zoo.sweep_kind(n) for n in ("sweep40-seed3", "branches10-seed2", "resnet18")] == ["blocks", "branches", None]
    graph = from_relax(load_model(zoo.branch_sweep(40, seed=1)))
    ops = [n.op for n in graph.nodes]
    assert ops.count("relax.matmul") == ops.count("relax.mean") == 40
    strided = {(n.attrs.get("groups", 1) > 1, n.attrs["kernel"]) for n in graph.nodes
               if n.op == "relax.nn.conv2d" and n.attrs["strides"] == (2, 2)}
    assert {(True, (3, 3)), (True, (5, 5))} <= strided and any(not depthwise for depthwise, _ in strided)
    pools = {(n.op, n.attrs["kernel"], n.attrs["strides"]) for n in graph.nodes if "pool2d" in n.op}
    assert len({op for op, *_ in pools}) == 2 and len({k for _, k, _ in pools}) == 3 and len({s for *_, s in pools}) == 2
    assert max(len(n.inputs) for n in graph.nodes if n.op == "relax.concat") >= 3
    with pytest.raises(MnovaError, match="at least 5 blocks"):
        zoo.branch_sweep(4)


def test_pool_sweep_is_mostly_pools_and_their_means():
    """The pool sweep: a valid ONNX model, the same for one seed and found by name, whose every
    block is a max or average pool of a 1x1 conv, of several kernels, strides and paddings, each
    followed by a global mean; one classifier for all of them."""
    from mnova_tvm.frontend import load_model
    from mnova_tvm.graph import from_relax

    sweep = zoo.pool_sweep(20, seed=3)
    onnx.checker.check_model(sweep)
    assert sweep.SerializeToString() == zoo.sweep_named("pools20-seed3").SerializeToString()
    assert zoo.sweep_kind("pools20-seed3") == "pools"
    graph = from_relax(load_model(zoo.pool_sweep(40, seed=1)))
    ops = [n.op for n in graph.nodes]
    pools = [n for n in graph.nodes if n.op in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d")]
    assert len(pools) == ops.count("relax.mean") == 40 and ops.count("relax.matmul") == 1
    assert all(graph.node_by_name[graph.producer[n.inputs[0]]].op == "relax.nn.conv2d" for n in pools)
    assert len({n.op for n in pools}) == 2 and len({n.attrs["kernel"] for n in pools}) == 3
    assert len({n.attrs["strides"] for n in pools}) == 2 and len({n.attrs["padding"] for n in pools}) >= 2
    with pytest.raises(MnovaError, match="at least 5 blocks"):
        zoo.pool_sweep(4)
