"""Import: ONNX -> Relax, TVM agrees with ONNX Runtime on every zoo model; bad input errors."""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mnova_tvm import frontend, zoo
from mnova_tvm.cli import main
from mnova_tvm.errors import MnovaError
from onnx_models import branchy_cnn, make_model


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_tvm_matches_onnxruntime(name):
    size = zoo.MODELS[name].test_input_size
    model = zoo.build(name, size)
    x = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    (ref,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    (out,) = frontend.run(frontend.load_model(model), [x])
    # float32 noise scales with the output's magnitude (fused multiply-adds on this CPU round apart)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def test_accepts_path_proto_module_and_zoo_name(tmp_path):
    model = branchy_cnn()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    from_path = frontend.load_model(str(path))
    from_proto = frontend.load_model(model)
    assert frontend.load_model(from_proto) is from_proto
    x = frontend.random_inputs(from_path)
    np.testing.assert_array_equal(frontend.run(from_path, x)[0], frontend.run(from_proto, x)[0])
    assert frontend.input_specs(frontend.load_model("squeezenet1_1", input_size=48))[0][1] == (1, 3, 48, 48)


def dynamic_model():
    node = helper.make_node("Relu", ["input"], ["output"])
    return make_model([node], [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                      [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 8, 8])])


def test_dynamic_shape_needs_input_shape():
    with pytest.raises(MnovaError, match=r"dynamic dimension 0 \(batch\).*--input-shape input="):
        frontend.load_model(dynamic_model())
    mod = frontend.load_model(dynamic_model(), {"input": (2, 3, 8, 8)})
    assert frontend.input_specs(mod)[0][1] == (2, 3, 8, 8)
    with pytest.raises(MnovaError, match="names nope"):
        frontend.load_model(dynamic_model(), {"nope": (1,)})


def unsupported_model():
    node = helper.make_node("FancyOp", ["input"], ["output"], domain="com.example")
    relu = helper.make_node("Relu", ["input"], ["r"])
    return make_model([relu, node], [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                      [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])])


def one_error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_bad_inputs_through_cli(tmp_path, capsys):
    assert "does not exist" in one_error_line(capsys, ["inspect", str(tmp_path / "missing.onnx")])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    assert "not a readable ONNX model" in one_error_line(capsys, ["inspect", str(garbage)])
    path = tmp_path / "fancy.onnx"
    onnx.save(unsupported_model(), str(path))
    assert "FancyOp" in one_error_line(capsys, ["inspect", str(path)])
    dyn = tmp_path / "dyn.onnx"
    onnx.save(dynamic_model(), str(dyn))
    assert "--input-shape input=" in one_error_line(capsys, ["inspect", str(dyn)])
    assert "bad --input-shape" in one_error_line(capsys, ["inspect", str(dyn), "--input-shape", "input=1,x"])
    assert main(["inspect", str(dyn), "--input-shape", "input=1,3,8,8", "--json"]) == 0


def test_missing_file_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mnova_tvm", "inspect", str(tmp_path / "missing.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
